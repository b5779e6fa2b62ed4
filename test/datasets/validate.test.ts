import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkLine, validateTrainingFile, type TrainingFormat } from '../../src/datasets/validate.ts';

const user = { role: 'user', content: 'Hi' };
const assistant = { role: 'assistant', content: 'Hello' };
const weatherTool = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } };
const call = (name: string, args = '{"city":"Paris"}') => ({ id: 'call_1', type: 'function', function: { name, arguments: args } });
const preference = { input: { messages: [user] }, preferred_output: [assistant], non_preferred_output: [{ role: 'assistant', content: 'No' }] };

// Each rule: [code, format, a line that breaks only that rule, a close line that passes].
const rules: [string, TrainingFormat, object, object][] = [
  ['missing_messages_list', 'chat', { messages: [] }, { messages: [user, assistant] }],
  ['missing_messages_list', 'chat', { tools: [] }, { messages: [user, assistant], tools: [] }],
  ['unrecognized_key', 'chat', { messages: [user, assistant], prompt: 'x' }, { messages: [user, assistant], parallel_tool_calls: false }],
  ['message_missing_key', 'chat', { messages: [{ content: 'Hi' }, assistant] }, { messages: [user, assistant] }],
  ['message_missing_key', 'chat', { messages: [user, { role: 'assistant', tool_calls: [call('get_weather')] }, { role: 'tool', content: '21' }, assistant], tools: [weatherTool] },
    { messages: [user, { role: 'assistant', tool_calls: [call('get_weather')] }, { role: 'tool', tool_call_id: 'call_1', content: '21' }, assistant], tools: [weatherTool] }],
  ['message_unrecognized_key', 'chat', { messages: [{ ...user, tool_call_id: 'call_1' }, assistant] }, { messages: [{ ...user, name: 'ann' }, assistant] }],
  ['unrecognized_role', 'chat', { messages: [{ role: 'bot', content: 'Hi' }, assistant] }, { messages: [{ role: 'developer', content: 'Hi' }, assistant] }],
  ['missing_content', 'chat', { messages: [{ role: 'user' }, assistant] }, { messages: [user, assistant] }],
  ['missing_content', 'chat', { messages: [{ role: 'user', content: '' }, assistant] }, { messages: [{ role: 'user', content: ' ' }, assistant] }],
  ['missing_content', 'chat', { messages: [user, { role: 'assistant', content: null }] }, { messages: [user, { role: 'assistant', content: null, tool_calls: [call('get_weather')] }, assistant], tools: [weatherTool] }],
  ['invalid_content', 'chat', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }, assistant] },
    { messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }, assistant] }],
  ['invalid_content', 'chat', { messages: [{ role: 'user', content: 42 }, assistant] }, { messages: [{ role: 'user', content: '42' }, assistant] }],
  ['invalid_weight', 'chat', { messages: [user, { ...assistant, weight: 0.5 }] }, { messages: [user, { ...assistant, weight: 1 }] }],
  ['invalid_weight', 'chat', { messages: [{ ...user, weight: 1 }, assistant] }, { messages: [user, assistant] }],
  ['example_missing_assistant_message', 'chat', { messages: [user] }, { messages: [user, assistant] }],
  ['example_missing_assistant_message', 'chat', { messages: [user, { ...assistant, weight: 0 }] }, { messages: [user, { ...assistant, weight: 0 }, user, assistant] }],
  ['tool_call_without_definition', 'chat', { messages: [user, { role: 'assistant', tool_calls: [call('get_time')] }, assistant], tools: [weatherTool] },
    { messages: [user, { role: 'assistant', tool_calls: [call('get_weather')] }, assistant], tools: [weatherTool] }],
  ['tool_call_without_definition', 'chat', { messages: [user, { role: 'assistant', function_call: { name: 'f', arguments: '{}' } }, assistant] },
    { messages: [user, { role: 'assistant', function_call: { name: 'f', arguments: '{}' } }, { role: 'function', name: 'f', content: '1' }, assistant], functions: [{ name: 'f' }] }],
  ['invalid_tool_call', 'chat', { messages: [user, { role: 'assistant', tool_calls: [call('get_weather', '{city')] }, assistant], tools: [weatherTool] },
    { messages: [user, { role: 'assistant', tool_calls: [call('get_weather', '{}')] }, assistant], tools: [weatherTool] }],
  ['invalid_tool_call', 'chat', { messages: [user, { role: 'assistant', tool_calls: [{ id: 'c', function: { name: 'get_weather' } }] }, assistant], tools: [weatherTool] },
    { messages: [user, { role: 'assistant', tool_calls: [call('get_weather')] }, assistant], tools: [weatherTool] }],
  ['tool_message_without_call', 'chat', { messages: [user, { role: 'tool', tool_call_id: 'call_9', content: '21' }, assistant] },
    { messages: [user, { role: 'assistant', tool_calls: [call('get_weather')] }, { role: 'tool', tool_call_id: 'call_1', content: '21' }, assistant], tools: [weatherTool] }],
  ['invalid_tools', 'chat', { messages: [user, assistant], tools: [{ type: 'function' }] }, { messages: [user, assistant], tools: [weatherTool] }],
  ['missing_preference_output', 'preference', { input: { messages: [user] }, preferred_output: [assistant] }, preference],
  ['invalid_preference_output', 'preference', { ...preference, preferred_output: [assistant, assistant] }, preference],
  ['invalid_preference_output', 'preference', { ...preference, non_preferred_output: [user] }, preference],
  ['invalid_preference_input', 'preference', { ...preference, input: { messages: [user, assistant] } }, preference],
  ['invalid_preference_input', 'preference', { preferred_output: [assistant], non_preferred_output: [assistant] }, preference],
  ['unrecognized_key', 'preference', { ...preference, messages: [user] }, preference],
];

for (const [code, format, failing, passing] of rules) {
  test(`${format} rule ${code}: ${JSON.stringify(failing).slice(0, 90)}`, () => {
    assert.deepEqual(checkLine(failing as Record<string, unknown>, format), [code]);
    assert.deepEqual(checkLine(passing as Record<string, unknown>, format), []);
  });
}

test('the older preferred_completion / non_preferred_completion names are accepted', () => {
  const line = { input: { messages: [user] }, preferred_completion: [assistant], non_preferred_completion: [assistant] };
  assert.deepEqual(checkLine(line, 'preference'), []);
});

const dir = mkdtempSync(join(tmpdir(), 'validate-'));
function file(lines: (object | string)[]): string {
  const path = join(dir, `f${Math.random().toString(36).slice(2)}.jsonl`);
  writeFileSync(path, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return path;
}
const good = { messages: [user, assistant] };

test('a file of 10 valid chat examples passes, and its format is detected', async () => {
  assert.deepEqual(await validateTrainingFile(file(Array(10).fill(good)), { param: 'training_file' }), { ok: true, format: 'chat', examples: 10 });
  assert.deepEqual(await validateTrainingFile(file(Array(10).fill(preference)), { param: 'training_file' }), { ok: true, format: 'preference', examples: 10 });
});

test('fewer than 10 examples is invalid_n_examples, worded as the hosted API does', async () => {
  const r = await validateTrainingFile(file(Array(9).fill(good)), { param: 'training_file' });
  assert.deepEqual(r.ok ? null : r.error, {
    code: 'invalid_n_examples',
    message: 'Training file has 9 example(s), but must have at least 10 examples',
    param: 'training_file',
  });
});

test('every problem class is reported with its first lines and its count, in one error', async () => {
  const lines: (object | string)[] = Array(12).fill(good);
  for (const n of [2, 4, 5, 6, 7, 8, 9]) lines[n - 1] = { messages: [user] };
  lines[2] = '{broken';
  lines[10] = preference;
  const r = await validateTrainingFile(file(lines), { param: 'validation_file' });
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.equal(r.error.param, 'validation_file');
  assert.equal(r.error.code, 'invalid_validation_file');
  assert.deepEqual(r.problems.map((p) => [p.code, p.lines, p.count]), [
    ['example_missing_assistant_message', [2, 4, 5, 6, 7], 7],
    ['invalid_json', [3], 1],
    ['mixed_formats', [11], 1],
  ]);
  assert.match(r.error.message, /^Validation file has invalid lines\. example_missing_assistant_message: .* \(lines 2, 4, 5, 6, 7, …; 7 in total\)/);
  assert.match(r.error.message, /invalid_json: .*\(line 3; 1 in total\)/);
});

test('the expected format wins over what the first line looks like: a file for the other method is named as such', async () => {
  const r = await validateTrainingFile(file(Array(10).fill(good)), { param: 'training_file', expectedFormat: 'preference' });
  assert.deepEqual(r.ok ? null : r.problems.map((p) => [p.code, p.count]), [['not_preference_pair', 10]]);
  assert.match(r.ok ? '' : r.error.message, /not_preference_pair: the line is a chat example, but a DPO job trains on preference pairs .*\(lines 1, 2, 3, 4, 5, …; 10 in total\)/);
  const reverse = await validateTrainingFile(file(Array(10).fill(preference)), { param: 'training_file', expectedFormat: 'chat' });
  assert.match(reverse.ok ? '' : reverse.error.message, /not_chat_example: the line is a preference pair, but a supervised job trains on chat examples/);
});
