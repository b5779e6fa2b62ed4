// Tool calls parsed from generated text: Hermes-style blocks, content before them, unknown tools and bad JSON left as text.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { functionToolNames, parseToolCalls } from '../../src/http/tool-calls.ts';

const names = functionToolNames([{ type: 'function', function: { name: 'get_weather' } }, { type: 'function', function: { name: 'add' } }, { type: 'custom' }]);

test('calls become tool_calls with JSON-string arguments; text before them is the content', () => {
  const text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>{"name": "add", "arguments": "{\\"a\\":1}"}</tool_call>';
  const parsed = parseToolCalls(text, names)!;
  assert.equal(parsed.content, 'Let me check.');
  assert.deepEqual(parsed.calls.map((c) => [c.type, c.function.name, c.function.arguments]), [
    ['function', 'get_weather', '{"city":"Paris"}'],
    ['function', 'add', '{"a":1}'],
  ]);
  assert.ok(parsed.calls.every((c) => /^call_[A-Za-z0-9]{24}$/.test(c.id)));
  assert.equal(parseToolCalls('<tool_call>{"name": "add", "arguments": {}}</tool_call>', names)!.content, null);
});

test('no calls, calls to tools not offered, or malformed JSON stay plain text', () => {
  assert.equal(parseToolCalls('Just text.', names), null);
  assert.equal(parseToolCalls('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', names), null);
  assert.equal(parseToolCalls('<tool_call>{"name": "add", </tool_call>', names), null);
  assert.equal(parseToolCalls('<tool_call>{"name": "add", "arguments": {}}', names), null); // unterminated
  assert.equal(parseToolCalls('<tool_call>{"name": "add"}</tool_call>', new Set()), null);
});
