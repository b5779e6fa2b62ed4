// Tool calls and reasoning through the official SDK: tiny seeded models with Qwen3's real tokenizer and the real Qwen3, Llama 3.1 and Mistral Nemo templates, each tuned briefly on answers and calls, then served.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type OpenAI from 'openai';
import { LengthFinishReasonError } from 'openai/core/error';
import { buildMicroBatch } from '../../src/datasets/batches.ts';
import { createChatTokenizer, tokenizeChatExample } from '../../src/datasets/tokenize-example.ts';
import type { LoraConfig } from '../../src/engine/lora/config.ts';
import { saveAdapter } from '../../src/engine/lora/peft.ts';
import { loadTokenizer } from '../../src/engine/models/tokenizer.ts';
import { createTrainer } from '../../src/engine/train/trainer.ts';
import { registerFineTunedModel } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { writeTemplateModel, type TemplateModelOptions } from '../helpers/template-model.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-tools-'));
// Keys in the order the SDK's runTools writes them: templates render tools as JSON, and the tiny models know only this prompt.
const weather: OpenAI.ChatCompletionFunctionTool = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', description: 'The city' } }, required: ['city'] }, description: 'Current weather in a city' },
};
const tools = [weather];
// The same tool, strict, for a city list without "Paris": the Llama and Mistral models are also tuned to call it with "Paris".
const CITIES = ['Oslo', 'Rome'];
const strictWeather: OpenAI.ChatCompletionFunctionTool = {
  type: 'function',
  function: { ...weather.function, strict: true, parameters: { type: 'object', properties: { city: { type: 'string', description: 'The city', enum: CITIES } }, required: ['city'], additionalProperties: false } },
};
const ASK_WEATHER = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];
const ASK_PASSWORD = [{ role: 'user' as const, content: 'How do I reset my password?' }];
const callWeather = (id: string) => ({ role: 'assistant', content: null, tool_calls: [{ id, type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] });

interface Family {
  base: string;
  model: TemplateModelOptions;
  examples: { messages: Record<string, unknown>[]; tools?: unknown[] }[];
}

const FAMILIES = {
  // Qwen3 SFT data writes the reasoning inline; its template moves it into the think block.
  qwen: {
    base: 'qwen3-tiny',
    model: { template: 'Qwen-Qwen3-0.6B' },
    examples: [
      { messages: [...ASK_PASSWORD, { role: 'assistant', content: '<think>\nThe user asks about passwords.\n</think>\n\nGo to Settings > Security.' }] },
      { messages: [...ASK_WEATHER, { ...callWeather('call_1'), content: '<think>\nA weather question: call the tool.\n</think>\n\n' }], tools },
    ],
  },
  llama: {
    base: 'llama31-tiny',
    model: {
      template: 'meta-llama-Llama-3.1-8B-Instruct',
      specialTokens: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>', '<|eom_id|>', '<|python_tag|>'],
      bosToken: '<|begin_of_text|>',
      eosToken: '<|eot_id|>',
    },
    examples: [{ messages: [...ASK_WEATHER, callWeather('call_1')], tools }, { messages: [...ASK_WEATHER, callWeather('call_2')], tools: [strictWeather] }],
  },
  mistral: {
    base: 'mistral-nemo-tiny',
    model: {
      template: 'mistralai-Mistral-Nemo-Instruct-2407',
      specialTokens: ['<s>', '</s>', '[INST]', '[/INST]', '[TOOL_CALLS]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]', '[TOOL_RESULTS]', '[/TOOL_RESULTS]'],
      bosToken: '<s>',
      eosToken: '</s>',
    },
    examples: [{ messages: [...ASK_WEATHER, callWeather('abcDEF123')], tools }, { messages: [...ASK_WEATHER, callWeather('abcDEF124')], tools: [strictWeather] }],
  },
} satisfies Record<string, Family>;
const ft = (f: Family) => `ft:${f.base}:default:tools:Aa11Bb22`;

/** Builds the family's model folder, trains an adapter on its examples until greedy decoding follows them, registers it as an ft: model. */
async function prepare(f: Family, seed: number): Promise<void> {
  const modelDir = join(dataDir, 'models', f.base);
  writeTemplateModel(modelDir, f.model);
  const tokenizer = loadTokenizer(modelDir);
  const chat = createChatTokenizer(tokenizer);
  const lora: LoraConfig = { r: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
  const trainer = await createTrainer({ modelDir, cacheDir: join(dataDir, 'cache', f.base), lora, seed, device: 'cpu' });
  const batch = buildMicroBatch(
    f.examples.map((e) => tokenizeChatExample(chat, e)),
    1024,
    tokenizer.padTokenId ?? 0,
  );
  let loss = Infinity;
  // ~50 steps reach a loss near 0.1, where greedy decoding already follows every example; 60 leave a margin.
  for (let step = 0; step < 60 && loss > 0.05; step++) loss = (await trainer.trainStep([batch], 0.02)).loss;
  const adapterDir = `adapters/${f.base}`;
  saveAdapter(join(dataDir, adapterDir), lora, trainer.getAdapter(), f.base);
  await trainer.close();
  await registerFineTunedModel(dataDir, { id: ft(f), project: 'default', base_model: f.base, adapter_dir: adapterDir, job_id: null, step: null, created_at: 1_700_000_000, base_precision: 'fp32' });
}

let server: TestServer;
let client: OpenAI;
before(async () => {
  await prepare(FAMILIES.qwen, 1);
  await prepare(FAMILIES.llama, 2);
  await prepare(FAMILIES.mistral, 3);
  server = await startTestServer({ dataDir });
  client = server.client();
});
after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

const greedy = { temperature: 0, max_completion_tokens: 60 } as const;

/** A raw stream's chunks, and per choice the concatenated content and reasoning deltas. */
async function streamed(params: Omit<OpenAI.ChatCompletionCreateParamsStreaming, 'stream'>) {
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const chunk of await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } })) chunks.push(chunk);
  const deltas = chunks.flatMap((c) => c.choices.map((choice) => choice.delta as OpenAI.ChatCompletionChunk.Choice.Delta & { reasoning_content?: string }));
  return {
    chunks,
    content: deltas.map((d) => d.content ?? '').join(''),
    reasoning: deltas.map((d) => d.reasoning_content ?? '').join(''),
    finish: chunks.flatMap((c) => c.choices.map((choice) => choice.finish_reason)).filter((r) => r !== null),
    usage: chunks.at(-1)!.usage!,
  };
}

type ReasoningMessage = OpenAI.ChatCompletionMessage & { reasoning_content?: string | null };

test('Qwen3 template: a tuned answer comes back as clean content, its think block as reasoning_content, streamed and not', async () => {
  const r = await client.chat.completions.create({ model: ft(FAMILIES.qwen), messages: ASK_PASSWORD, ...greedy });
  const message = r.choices[0].message as ReasoningMessage;
  assert.equal(message.content, 'Go to Settings > Security.');
  assert.equal(message.reasoning_content, 'The user asks about passwords.');
  assert.equal(r.choices[0].finish_reason, 'stop');
  const reasoningTokens = r.usage!.completion_tokens_details!.reasoning_tokens!;
  assert.ok(reasoningTokens > 3 && reasoningTokens < r.usage!.completion_tokens, `reasoning ${reasoningTokens} of ${r.usage!.completion_tokens} tokens`);

  const s = await streamed({ model: ft(FAMILIES.qwen), messages: ASK_PASSWORD, ...greedy });
  assert.deepEqual([s.content, s.reasoning, s.finish], [message.content, message.reasoning_content, ['stop']]);
  assert.deepEqual(s.usage, r.usage);
  assert.ok(s.chunks.every((c) => !c.choices.some((choice) => choice.delta.content?.includes('<think>'))));
});

test('Qwen3 template: a tuned call comes back as tool_calls with content null; streamed as id/name first, then argument fragments', async () => {
  const r = await client.chat.completions.create({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, tools, ...greedy });
  const message = r.choices[0].message as ReasoningMessage;
  assert.equal(message.content, null);
  assert.equal(message.reasoning_content, 'A weather question: call the tool.');
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  const call = message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  assert.deepEqual([message.tool_calls!.length, call.type, call.function.name, JSON.parse(call.function.arguments)], [1, 'function', 'get_weather', { city: 'Paris' }]);

  // The SDK's stream helper accumulates the fragments into the same call.
  const stream = client.chat.completions.stream({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, tools, ...greedy });
  const fragments: string[] = [];
  stream.on('tool_calls.function.arguments.delta', (e) => fragments.push(e.arguments_delta));
  const callDeltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
  stream.on('chunk', (c) => callDeltas.push(...(c.choices[0]?.delta.tool_calls ?? [])));
  const final = await stream.finalChatCompletion();
  const streamedCall = final.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  assert.deepEqual([final.choices[0].finish_reason, final.choices[0].message.content, streamedCall.function], ['tool_calls', null, call.function]);
  assert.ok(fragments.length > 1, `arguments came in ${fragments.length} fragment(s)`);
  assert.deepEqual(callDeltas[0], { index: 0, id: streamedCall.id, type: 'function', function: { name: 'get_weather', arguments: '' } });
  assert.ok(callDeltas.slice(1).every((d) => d.id === undefined && d.function?.name === undefined && typeof d.function?.arguments === 'string'));
});

test('runTools: the SDK runs the parsed call with its parsed arguments and sends back history the server accepts', async () => {
  const seen: unknown[] = [];
  const runner = client.chat.completions.runTools(
    {
      model: ft(FAMILIES.qwen),
      messages: ASK_WEATHER,
      ...greedy,
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: weather.function.parameters!, description: weather.function.description!, parse: JSON.parse, function: (args: unknown) => (seen.push(args), '21 C') } }],
    },
    { maxChatCompletions: 2 },
  );
  // The second answer (after the tool result) is whatever the tiny model says; if max tokens cut it off, the SDK refuses
  // to parse it. Either way the server answered the history the SDK sent back (a refusal would be a BadRequestError).
  const error = await runner.done().then(() => null, (err: unknown) => err);
  assert.ok(error === null || error instanceof LengthFinishReasonError, String(error));
  assert.deepEqual(seen, [{ city: 'Paris' }]);
  assert.deepEqual(runner.messages.slice(0, 3).map((m) => m.role), ['user', 'assistant', 'tool']);
});

test('deprecated functions/function_call: served as tools, answered with message.function_call; mixed or dangling fields are 400s', async () => {
  const functions = [weather.function];
  const r = await client.chat.completions.create({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, functions, ...greedy });
  const message = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'function_call');
  assert.equal(message.tool_calls, undefined);
  assert.deepEqual([message.function_call!.name, JSON.parse(message.function_call!.arguments)], ['get_weather', { city: 'Paris' }]);
  const s = await streamed({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, functions, ...greedy });
  const fc = s.chunks.flatMap((c) => c.choices.map((choice) => choice.delta.function_call).filter((d) => d !== undefined));
  assert.deepEqual([fc[0].name, fc.map((d) => d.arguments).join(''), s.finish], ['get_weather', message.function_call!.arguments, ['function_call']]);
  // function_call "none" means no call is parsed.
  const none = await client.chat.completions.create({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, functions, function_call: 'none', ...greedy });
  assert.equal(none.choices[0].message.function_call, undefined);

  await assert.rejects(client.chat.completions.create({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, functions, tools }), (e: any) => e.status === 400 && e.param === 'functions');
  await assert.rejects(client.chat.completions.create({ model: ft(FAMILIES.qwen), messages: ASK_WEATHER, function_call: 'auto' }), (e: any) => e.status === 400 && e.param === 'function_call');
});

test('chat_template_kwargs reach the template: enable_thinking false writes the empty think block into the prompt', async () => {
  const ask = (kwargs?: Record<string, unknown>) =>
    client.chat.completions.create({ model: FAMILIES.qwen.base, messages: ASK_PASSWORD, max_completion_tokens: 1, ...(kwargs ? { chat_template_kwargs: kwargs } : {}) } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const [plain, off] = [await ask(), await ask({ enable_thinking: false })];
  assert.equal(off.usage!.prompt_tokens - plain.usage!.prompt_tokens, 4); // "<think>", "\n\n", "</think>", "\n\n"
  // They cannot replace what the request itself says.
  assert.equal((await ask({ messages: [], add_generation_prompt: false })).usage!.prompt_tokens, plain.usage!.prompt_tokens);
  await assert.rejects(ask('x' as never), (e: any) => e.status === 400 && /chat_template_kwargs/.test(`${e.param} ${e.message}`));
});

test('Llama 3.1 template: a tuned call (bare JSON with "parameters") comes back as tool_calls, streamed and not', async () => {
  const r = await client.chat.completions.create({ model: ft(FAMILIES.llama), messages: ASK_WEATHER, tools, ...greedy });
  const call = r.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
  assert.deepEqual([r.choices[0].finish_reason, r.choices[0].message.content, call.function.name, JSON.parse(call.function.arguments)], ['tool_calls', null, 'get_weather', { city: 'Paris' }]);
  const final = await client.chat.completions.stream({ model: ft(FAMILIES.llama), messages: ASK_WEATHER, tools, ...greedy }).finalChatCompletion();
  assert.deepEqual((final.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function, call.function);
  // Without tools on offer the same reply is plain content.
  const plain = await client.chat.completions.create({ model: ft(FAMILIES.llama), messages: ASK_WEATHER, tools, tool_choice: 'none', ...greedy });
  assert.deepEqual([plain.choices[0].message.tool_calls, plain.choices[0].finish_reason], [undefined, 'stop']);
  assert.match(plain.choices[0].message.content!, /^\{"name": "get_weather"/);
});

test('Mistral Nemo template: [TOOL_CALLS] (a special token, kept for parsing) gives tool_calls with 9-character ids', async () => {
  const r = await client.chat.completions.create({ model: ft(FAMILIES.mistral), messages: ASK_WEATHER, tools, ...greedy });
  const calls = r.choices[0].message.tool_calls as OpenAI.ChatCompletionMessageFunctionToolCall[];
  assert.deepEqual([r.choices[0].finish_reason, r.choices[0].message.content, calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])], ['tool_calls', null, [['get_weather', { city: 'Paris' }]]]);
  assert.match(calls[0].id, /^[A-Za-z0-9]{9}$/);
  const s = await streamed({ model: ft(FAMILIES.mistral), messages: ASK_WEATHER, tools, ...greedy });
  assert.deepEqual([s.content, s.finish], ['', ['tool_calls']]);
  // The template's own refusal (roles must alternate) is a 400 on messages, not a 500.
  await assert.rejects(
    client.chat.completions.create({ model: ft(FAMILIES.mistral), messages: [...ASK_WEATHER, ...ASK_WEATHER] }),
    (e: any) => e.status === 400 && e.param === 'messages' && /alternate/.test(e.message),
  );
});

test('tool_choice auto with a strict tool: a Llama 3.1 or Mistral call, once begun, is held to the schema (the tuned "Paris" is not on offer)', async () => {
  for (const family of [FAMILIES.llama, FAMILIES.mistral]) {
    const r = await client.chat.completions.create({ model: ft(family), messages: ASK_WEATHER, tools: [strictWeather], tool_choice: 'auto', ...greedy });
    const calls = (r.choices[0].message.tool_calls ?? []) as OpenAI.ChatCompletionMessageFunctionToolCall[];
    assert.equal(r.choices[0].finish_reason, 'tool_calls', `${family.base}: ${JSON.stringify(r.choices[0].message)}`);
    assert.ok(calls.length >= 1);
    for (const call of calls) {
      assert.equal(call.function.name, 'get_weather');
      assert.ok(CITIES.includes(JSON.parse(call.function.arguments).city), `${family.base}: ${call.function.arguments}`);
    }
  }
});
