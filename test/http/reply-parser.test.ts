// Replies parsed as each template family writes them (real templates in test/fixtures/chat-templates): reasoning, content, tool calls, fed whole and piece by piece.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { compileChatTemplate, toTemplateMessages } from '../../src/engine/models/chat-template.ts';
import { promptOpensThink, replyFormatOf, TOOL_CALL_FORMATS, type ReplyFormat } from '../../src/engine/models/reply-format.ts';
import { createReplyParser, functionToolNames, type ReplyPart } from '../../src/http/reply-parser.ts';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/chat-templates/${name}.jinja`, import.meta.url), 'utf8');
const TEMPLATES = {
  qwen3: fixture('Qwen-Qwen3-0.6B'),
  hermes3: fixture('NousResearch-Hermes-3-Llama-3.1-8B-tool_use'),
  llama31: fixture('meta-llama-Llama-3.1-8B-Instruct'),
  llama32: fixture('meta-llama-Llama-3.2-3B-Instruct'),
  mistral: fixture('mistralai-Mistral-Nemo-Instruct-2407'),
  r1: fixture('deepseek-ai-DeepSeek-R1-Distill-Qwen-32B'),
};
const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather', parameters: { type: 'object', properties: { city: { type: 'string', description: 'City name' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'add', description: 'Adds', parameters: { type: 'object', properties: { a: { type: 'number', description: 'a' } } } } },
];
const names = functionToolNames(tools);

interface Reply {
  reasoning: string;
  content: string;
  calls: { id: string; name: string; arguments: string }[];
}

/** Runs text through a parser in pieces of `step` characters (Infinity: whole) and joins the parts. */
function parse(format: ReplyFormat, text: string, step = Infinity, o: { startsInThink?: boolean; maxCalls?: number; toolNames?: Set<string> } = {}): Reply & { parts: ReplyPart[] } {
  const parser = createReplyParser({ format, toolNames: o.toolNames ?? names, maxCalls: o.maxCalls ?? Infinity, startsInThink: o.startsInThink ?? false });
  const parts: ReplyPart[] = [];
  for (let i = 0; i < text.length; i += step) parts.push(...parser.push(text.slice(i, i + step)));
  parts.push(...parser.end());
  const reply: Reply & { parts: ReplyPart[] } = { reasoning: '', content: '', calls: [], parts };
  for (const p of parts) {
    if (p.type === 'reasoning') reply.reasoning += p.text;
    else if (p.type === 'content') reply.content += p.text;
    else if (p.type === 'call') reply.calls.push({ id: p.id, name: p.name, arguments: '' });
    else reply.calls[p.index].arguments += p.text;
  }
  return reply;
}

/** Whole and character by character give the same reply (ids aside). */
function parseBothWays(format: ReplyFormat, text: string, o: Parameters<typeof parse>[3] = {}): Reply {
  const whole = parse(format, text, Infinity, o);
  const pieces = parse(format, text, 1, o);
  const strip = (r: Reply) => ({ ...r, calls: r.calls.map((c) => ({ ...c, id: '' })), parts: undefined });
  assert.deepEqual(strip(pieces), strip(whole), `piecewise parse of ${JSON.stringify(text)}`);
  const { parts: _, ...reply } = whole;
  return reply;
}

/** What a template writes for an assistant turn: the render with the turn minus the render of the prompt before it. */
function assistantTurn(template: string, assistant: Record<string, unknown>, eos = '</s>'): string {
  const t = compileChatTemplate(template, { bosToken: '<s>', eosToken: eos });
  const history = [{ role: 'user', content: 'Weather in Paris and 2+3?' }];
  const prompt = t.render({ messages: toTemplateMessages(history), tools, addGenerationPrompt: true });
  const whole = t.render({ messages: toTemplateMessages([...history, assistant]), tools });
  assert.ok(whole.startsWith(prompt), 'the template is prefix-stable');
  return whole.slice(prompt.length);
}

const call = (id: string, name: string, args: object) => ({ id, type: 'function', function: { name, arguments: JSON.stringify(args) } });

test('each fixture template is read as its family, with think tags where it thinks', () => {
  const families = Object.fromEntries(Object.entries(TEMPLATES).map(([k, src]) => [k, replyFormatOf(src).toolCalls.family]));
  assert.deepEqual(families, { qwen3: 'hermes', hermes3: 'hermes', llama31: 'llama3', llama32: 'llama3', mistral: 'mistral', r1: 'hermes' });
  assert.deepEqual(replyFormatOf(TEMPLATES.qwen3).think, { open: '<think>', close: '</think>' });
  assert.equal(replyFormatOf(TEMPLATES.llama31).think, null);
  // DeepSeek-R1 distills open the think block in the prompt; Qwen3 with enable_thinking false closes an empty one there.
  const render = (src: string, extra?: Record<string, unknown>) =>
    compileChatTemplate(src, { bosToken: '<s>', eosToken: '</s>' }).render({ messages: [{ role: 'user', content: 'Hi' }], addGenerationPrompt: true, extra });
  assert.equal(promptOpensThink(replyFormatOf(TEMPLATES.r1), render(TEMPLATES.r1)), true);
  assert.equal(promptOpensThink(replyFormatOf(TEMPLATES.qwen3), render(TEMPLATES.qwen3)), false);
  assert.match(render(TEMPLATES.qwen3, { enable_thinking: false }), /<think>\n\n<\/think>\n\n$/);
});

test('Qwen3: a templated reply with reasoning and two calls parses back to them; an answer keeps only its content', () => {
  const format = replyFormatOf(TEMPLATES.qwen3);
  const turn = assistantTurn(TEMPLATES.qwen3, {
    role: 'assistant',
    content: '<think>\nTwo questions, two tools.\n</think>\n\n',
    tool_calls: [call('call_1', 'get_weather', { city: 'Paris' }), call('call_2', 'add', { a: 2, b: 3 })],
  }).replace(/<\|im_end\|>\n$/, '');
  const reply = parseBothWays(format, turn);
  assert.equal(reply.reasoning, 'Two questions, two tools.');
  assert.equal(reply.content, '');
  assert.deepEqual(reply.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['get_weather', { city: 'Paris' }], ['add', { a: 2, b: 3 }]]);
  assert.ok(reply.calls.every((c) => /^call_[A-Za-z0-9]{24}$/.test(c.id)));

  const answer = parseBothWays(format, '<think>\nThe user asks about passwords.\n\nSettings has it.\n</think>\n\nGo to Settings > Security.\n');
  assert.deepEqual([answer.reasoning, answer.content, answer.calls], ['The user asks about passwords.\n\nSettings has it.', 'Go to Settings > Security.\n', []]);
  // The empty think block Qwen3 writes when it decides not to think (the measured reply) leaves clean content.
  assert.deepEqual(parseBothWays(format, '<think>\n\n</think>\n\nGo to Settings > …'), { reasoning: '', content: 'Go to Settings > …', calls: [] });
});

test('streamed parts: content before a call is sent before the call ends; a call is its name first, then argument fragments', () => {
  const format = replyFormatOf(TEMPLATES.qwen3);
  const parser = createReplyParser({ format, toolNames: names, maxCalls: Infinity, startsInThink: false });
  assert.deepEqual(parser.push('Let me look'), [{ type: 'content', text: 'Let me look' }]);
  assert.deepEqual(parser.push(' that up.\n<tool'), [{ type: 'content', text: ' that up.' }]); // the newline and "<tool" wait
  assert.deepEqual(parser.push('_call>\n{"name": "get_wea'), []);
  const named = parser.push('ther", "arguments": {"ci');
  assert.equal(named[0].type, 'call');
  assert.deepEqual(named.slice(1), [{ type: 'arguments', index: 0, text: '{"ci' }]);
  assert.deepEqual(parser.push('ty": "Paris"}}\n</tool_call>'), [{ type: 'arguments', index: 0, text: 'ty": "Paris"}' }]);
  assert.deepEqual(parser.end(), []);
  assert.equal(parser.calls, 1);
  // Nothing waits where no marker can follow: leading whitespace of a reply without think block or bare-JSON calls goes out at once.
  const plain = createReplyParser({ format: { toolCalls: TOOL_CALL_FORMATS.hermes, think: null }, toolNames: new Set(), maxCalls: Infinity, startsInThink: false });
  assert.deepEqual(plain.push('\n\n'), [{ type: 'content', text: '\n\n' }]);
});

test('Llama 3.1 and 3.2: the templated JSON call, with or without <|python_tag|>, parses; "parameters" are the arguments', () => {
  for (const template of [TEMPLATES.llama31, TEMPLATES.llama32]) {
    const format = replyFormatOf(template);
    const turn = assistantTurn(template, { role: 'assistant', content: null, tool_calls: [call('call_1', 'get_weather', { city: 'Paris' })] }).replace(/<\|eot_id\|>$/, '');
    assert.equal(turn, '{"name": "get_weather", "parameters": {"city": "Paris"}}');
    for (const text of [turn, `<|python_tag|>${turn}`, `\n\n${turn}`]) {
      const reply = parseBothWays(format, text);
      assert.deepEqual([reply.content, reply.calls.map((c) => [c.name, c.arguments])], ['', [['get_weather', '{"city": "Paris"}']]], text);
    }
    // vLLM's llama3_json convention: several calls joined by "; "; parallel_tool_calls false keeps the first.
    const two = `${turn}; {"name": "add", "parameters": {"a": 1}}`;
    assert.deepEqual(parseBothWays(format, two).calls.map((c) => c.name), ['get_weather', 'add']);
    assert.deepEqual(parseBothWays(format, two, { maxCalls: 1 }).calls.map((c) => c.name), ['get_weather']);
    // A reply that merely starts with JSON, or names no offered tool, is content.
    for (const text of ['{"answer": 42}', '{"name": "rm", "parameters": {}}', '{not json at all}']) assert.deepEqual(parseBothWays(format, text), { reasoning: '', content: text, calls: [] });
  }
});

test('Mistral Nemo: [TOOL_CALLS] with a list of calls parses, ids are the 9 alphanumerics its template insists on', () => {
  const format = replyFormatOf(TEMPLATES.mistral);
  const turn = assistantTurn(TEMPLATES.mistral, { role: 'assistant', content: null, tool_calls: [call('abcDEF123', 'get_weather', { city: 'Paris' }), call('xyzXYZ789', 'add', { a: 2 })] }).replace(/<\/s>$/, '');
  assert.ok(turn.startsWith('[TOOL_CALLS][{"name": "get_weather"'), turn);
  const reply = parseBothWays(format, turn);
  assert.deepEqual(reply.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['get_weather', { city: 'Paris' }], ['add', { a: 2 }]]);
  assert.ok(reply.calls.every((c) => /^[A-Za-z0-9]{9}$/.test(c.id)));
  // The ids go back into the template as history without its "IDs should be alphanumeric strings with length 9" error.
  const t = compileChatTemplate(TEMPLATES.mistral, { bosToken: '<s>', eosToken: '</s>' });
  const history = [
    { role: 'user', content: 'Weather?' },
    { role: 'assistant', content: null, tool_calls: reply.calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })) },
    { role: 'tool', tool_call_id: reply.calls[0].id, content: '21 C' },
  ];
  assert.match(t.render({ messages: toTemplateMessages(history), tools, addGenerationPrompt: true }), /\[TOOL_RESULTS\]/);
});

test('Hermes 3: its templated call parses', () => {
  const format = replyFormatOf(TEMPLATES.hermes3);
  const turn = assistantTurn(TEMPLATES.hermes3, { role: 'assistant', content: null, tool_calls: [call('call_1', 'get_weather', { city: 'Paris' })] }).replace(/<\|im_end\|>\n$/, '');
  assert.match(turn, /^<tool_call>\n/);
  const reply = parseBothWays(format, turn);
  assert.deepEqual([reply.content, reply.calls.map((c) => [c.name, JSON.parse(c.arguments)])], ['', [['get_weather', { city: 'Paris' }]]]);
});

test('DeepSeek-R1 distill: the reply starts inside the think block the prompt opened', () => {
  const format = replyFormatOf(TEMPLATES.r1);
  const reply = parseBothWays(format, 'Okay, 2+3 is 5.\n</think>\n\nThe answer is 5.', { startsInThink: true });
  assert.deepEqual(reply, { reasoning: 'Okay, 2+3 is 5.', content: 'The answer is 5.', calls: [] });
  // Cut off while thinking: everything so far is reasoning.
  assert.deepEqual(parseBothWays(format, 'Okay, let me', { startsInThink: true }), { reasoning: 'Okay, let me', content: '', calls: [] });
});

test('not calls: tools not offered, tool_choice none, malformed or unfinished blocks stay content; arguments as a JSON string are unwrapped', () => {
  const format = { toolCalls: TOOL_CALL_FORMATS.hermes, think: null };
  for (const text of ['<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"name" 1}', 'a <tool_call> b', '<tool_call>{"name": ']) {
    assert.deepEqual(parseBothWays(format, text), { reasoning: '', content: text, calls: [] }, text);
  }
  const text = '<tool_call>{"name": "add", "arguments": {}}</tool_call>';
  assert.deepEqual(parseBothWays(format, text, { toolNames: new Set() }), { reasoning: '', content: text, calls: [] });
  assert.deepEqual(parseBothWays(format, '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>').calls.map((c) => c.arguments), ['{"a": 1}']);
  assert.deepEqual(parseBothWays(format, '<tool_call>{"name": "add"}</tool_call>').calls.map((c) => c.arguments), ['{}']);
  // Once a call's name is out (streamed), the call stands: broken or missing arguments end it, as "{}" when none came.
  assert.deepEqual(parseBothWays(format, '<tool_call>{"name": "add", </tool_call>').calls.map((c) => [c.name, c.arguments]), [['add', '{}']]);
  // Cut off inside the arguments (max_tokens): the call stands with what it had.
  assert.deepEqual(parseBothWays(format, '<tool_call>{"name": "add", "arguments": {"a": 1').calls.map((c) => c.arguments), ['{"a": 1']);
});
