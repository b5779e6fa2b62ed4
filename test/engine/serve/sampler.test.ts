// The sampler: greedy, seeded draws, top_p, penalties, logit bias and logprobs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyTokenMask, createSampler, type SamplingParams } from '../../../src/engine/serve/sampler.ts';

const params = (over: Partial<SamplingParams> = {}): SamplingParams => ({
  temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed: 1, ...over,
});
const logits = Float32Array.from([0.1, 2.0, 1.9, -1, 0.5]);
const none = new Map<number, number>();

function draws(p: SamplingParams, n: number): number[] {
  const s = createSampler(p);
  return Array.from({ length: n }, () => s.next(logits, none).id);
}

test('temperature 0 is greedy; a tiny top_p keeps only the most likely token', () => {
  assert.deepEqual(draws(params({ temperature: 0 }), 5), [1, 1, 1, 1, 1]);
  assert.deepEqual(draws(params({ topP: 0.01, seed: 9 }), 20), Array(20).fill(1));
});

test('the same seed gives the same draws, another seed other draws, and draws follow the softmax', () => {
  assert.deepEqual(draws(params({ seed: 7 }), 50), draws(params({ seed: 7 }), 50));
  assert.notDeepEqual(draws(params({ seed: 7 }), 50), draws(params({ seed: 8 }), 50));
  const many = draws(params({ seed: 3 }), 4000);
  const freq = (id: number) => many.filter((x) => x === id).length / many.length;
  const z = [...logits].reduce((s, v) => s + Math.exp(v), 0);
  for (const id of [1, 2, 4]) assert.ok(Math.abs(freq(id) - Math.exp(logits[id]) / z) < 0.03, `token ${id}: ${freq(id)}`);
});

test('penalties and logit bias move the greedy choice', () => {
  const seen = new Map([[1, 2]]);
  assert.equal(createSampler(params({ temperature: 0 })).next(logits, seen).id, 1);
  assert.equal(createSampler(params({ temperature: 0, frequencyPenalty: 0.1 })).next(logits, seen).id, 2); // 2.0 − 0.2 < 1.9
  assert.equal(createSampler(params({ temperature: 0, presencePenalty: 0.15 })).next(logits, seen).id, 2);
  assert.equal(createSampler(params({ temperature: 0, logitBias: new Map([[3, 100]]) })).next(logits, none).id, 3);
});

test('logprobs: the chosen token and the top alternatives, largest first, from one normalised distribution', () => {
  const t = createSampler(params({ temperature: 0, topLogprobs: 3 })).next(logits, none);
  assert.deepEqual(t.top.map((a) => a.id), [1, 2, 4]);
  assert.equal(t.logprob, t.top[0].logprob);
  const all = createSampler(params({ temperature: 0, topLogprobs: 5 })).next(logits, none);
  assert.ok(Math.abs(all.top.reduce((s, a) => s + Math.exp(a.logprob), 0) - 1) < 1e-12);
  assert.ok(Number.isNaN(createSampler(params()).next(logits, none).logprob));
});

test('a grammar mask leaves only its tokens: greedy, sampled and as logprob alternatives', () => {
  const V = 70; // three mask words, the last one partial
  const wide = Float32Array.from({ length: V }, (_, i) => Math.sin(i)); // argmax 33
  const allowed = [5, 40, 64, 69];
  const mask = new Int32Array(3);
  for (const id of allowed) mask[id >> 5] |= 1 << (id & 31);
  const masked = Float32Array.from(wide);
  applyTokenMask(masked, mask);
  masked.forEach((v, i) => assert.equal(v, allowed.includes(i) ? wide[i] : -Infinity, `token ${i}`));
  assert.equal(createSampler(params({ temperature: 0 })).next(Float32Array.from(wide), none, mask).id, 64); // sin(64) is the largest allowed
  const sampler = createSampler(params({ temperature: 1.5, seed: 3 }));
  for (let k = 0; k < 50; k++) assert.ok(allowed.includes(sampler.next(Float32Array.from(wide), none, mask).id));
  const t = createSampler(params({ temperature: 0, topLogprobs: 10 })).next(Float32Array.from(wide), none, mask);
  assert.deepEqual(t.top.map((a) => a.id).sort((a, b) => a - b), allowed);
  const full = new Int32Array(3).fill(-1);
  const untouched = Float32Array.from(wide);
  applyTokenMask(untouched, full);
  assert.deepEqual(untouched, wide);
});
