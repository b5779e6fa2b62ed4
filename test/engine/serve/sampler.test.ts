// The sampler: greedy, seeded draws, top_p, penalties, logit bias and logprobs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createSampler, type SamplingParams } from '../../../src/engine/serve/sampler.ts';

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
