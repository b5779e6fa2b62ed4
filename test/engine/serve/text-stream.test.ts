// Incremental detokenization: UTF-8 split across byte tokens, stop strings spanning tokens, held-back stop prefixes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultTokenizerConfigJson, defaultTokenizerJson } from '../../../src/engine/models/default-model.ts';
import { createTokenizer } from '../../../src/engine/models/tokenizer.ts';
import { createTextStream, keepingTokens } from '../../../src/engine/serve/text-stream.ts';

const tokenizer = createTokenizer(defaultTokenizerJson(), defaultTokenizerConfigJson());

function run(text: string, stops: string[]): { pieces: string[]; stopped: boolean; flushed: string } {
  const stream = createTextStream(tokenizer, stops);
  const pieces: string[] = [];
  for (const id of tokenizer.encode(text)) {
    const piece = stream.push(id);
    if (piece) pieces.push(piece);
  }
  return { pieces, stopped: stream.stopped, flushed: stream.flush() };
}

test('byte tokens of multi-byte characters come out only as whole characters', () => {
  const text = 'héllo wörld 😀 — 漢字';
  const { pieces, stopped, flushed } = run(text, []);
  assert.equal(pieces.join('') + flushed, text);
  assert.ok(pieces.every((p) => !p.includes('\uFFFD')));
  assert.ok(!stopped);
});

test('a stop string spanning tokens ends the text before it; its prefix is held back until decided', () => {
  const r = run('Hello ENDworld END', ['END']);
  assert.equal(r.pieces.join(''), 'Hello ');
  assert.ok(r.stopped);
  assert.equal(r.flushed, '');
  const held = run('ab EN', ['END']);
  assert.equal(held.pieces.join(''), 'ab ');
  assert.equal(held.flushed, 'EN');
  const multi = run('x😀y', ['😀']);
  assert.equal(multi.pieces.join(''), 'x');
  assert.ok(multi.stopped);
});

test('kept special tokens (reply markers) come out as their text; other special tokens are still skipped', () => {
  const [start] = tokenizer.encode('<|im_start|>');
  const [end] = tokenizer.encode('<|im_end|>');
  const ids = [...tokenizer.encode('a'), start, ...tokenizer.encode('b'), end, ...tokenizer.encode('c')];
  const streamed = (decoder: Parameters<typeof createTextStream>[0]) => {
    const stream = createTextStream(decoder, []);
    return ids.map((id) => stream.push(id)).join('') + stream.flush();
  };
  assert.equal(streamed(tokenizer), 'abc');
  assert.equal(streamed(keepingTokens(tokenizer, new Map([[start, '<|im_start|>']]))), 'a<|im_start|>bc');
});
