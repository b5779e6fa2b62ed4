// The fast sampler against the straightforward one it replaced (kept here as the oracle): same tokens for the same seed, same logprobs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRng, type Rng } from '../../../src/engine/random.ts';
import { applyTokenMask, createSampler, tokenLogprobs, type SampledToken, type Sampler, type SamplingParams } from '../../../src/engine/serve/sampler.ts';

// ---- The oracle: the sampler as it was before the partial-selection rewrite, verbatim in its arithmetic. ----

function oracleSampler(p: SamplingParams): Sampler {
  const rng: Rng = createRng(p.seed);
  return {
    next(raw, counts, mask) {
      if (mask) applyTokenMask(raw, mask);
      if (p.temperature === 0 && p.topLogprobs === null && p.logitBias.size === 0 && p.presencePenalty === 0 && p.frequencyPenalty === 0) return { id: oracleArgmax(raw), logprob: NaN, top: [] };
      const V = raw.length;
      const logits = Float64Array.from(raw);
      for (const [id, bias] of p.logitBias) if (id >= 0 && id < V) logits[id] += bias;
      if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
        for (const [id, n] of counts) logits[id] -= p.presencePenalty + p.frequencyPenalty * n;
      }
      const id = p.temperature === 0 ? oracleArgmax(logits) : oracleDraw(logits, p.temperature, p.topP, rng);
      return p.topLogprobs === null ? { id, logprob: NaN, top: [] } : oracleTokenLogprobs(logits, id, p.topLogprobs);
    },
  };
}

function oracleTokenLogprobs(logits: Float32Array | Float64Array, id: number, top: number): SampledToken {
  const lse = oracleLogSumExp(logits, 1);
  const alternatives = top > 0 ? oracleTopK(logits, top).filter((j) => logits[j] > -Infinity) : [];
  return { id, logprob: logits[id] - lse, top: alternatives.map((j) => ({ id: j, logprob: logits[j] - lse })) };
}

function oracleArgmax(x: Float32Array | Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

function oracleLogSumExp(x: Float32Array | Float64Array, t: number): number {
  let m = -Infinity;
  for (const v of x) m = Math.max(m, v / t);
  let s = 0;
  for (const v of x) s += Math.exp(v / t - m);
  return m + Math.log(s);
}

function oracleTopK(x: Float32Array | Float64Array, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (idx.length < k) idx.push(i);
    else if (x[i] > x[idx[k - 1]]) idx[k - 1] = i;
    else continue;
    for (let j = idx.length - 1; j > 0 && x[idx[j - 1]] < x[idx[j]]; j--) [idx[j - 1], idx[j]] = [idx[j], idx[j - 1]];
  }
  return idx;
}

function oracleDraw(logits: Float64Array, t: number, topP: number, rng: Rng): number {
  const lse = oracleLogSumExp(logits, t);
  const probs = logits.map((v) => Math.exp(v / t - lse));
  let order: number[];
  let mass = 1;
  if (topP < 1) {
    order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
    let kept = 0;
    mass = 0;
    while (kept < order.length && mass < topP) mass += probs[order[kept++]];
    order.length = kept;
  } else order = Array.from(probs.keys());
  let u = rng.float() * mass;
  for (const i of order) {
    u -= probs[i];
    if (u < 0) return i;
  }
  return order[order.length - 1];
}

// ---- Seeded inputs: peaked and flat logit vectors, exact ties, masked tokens. ----

type Shape = 'peaked' | 'flat' | 'ties';

function randomLogits(V: number, shape: Shape, rng: Rng): Float32Array {
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) {
    const n = rng.normal();
    x[i] = shape === 'peaked' ? 3 * n : shape === 'flat' ? 0.05 * n : Math.round(2 * n) / 2; // 'ties': few distinct values
  }
  if (shape === 'peaked') for (let k = 0; k < 5; k++) x[Math.floor(rng.float() * V)] = 12 + rng.float();
  return x;
}

function randomMask(V: number, allowedShare: number, rng: Rng): Int32Array {
  const mask = new Int32Array(Math.ceil(V / 32));
  for (let i = 0; i < V; i++) if (rng.float() < allowedShare) mask[i >> 5] |= 1 << (i & 31);
  mask[0] |= 1; // at least one token stays allowed
  return mask;
}

const same = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

function assertSameToken(got: SampledToken, want: SampledToken, where: string): void {
  assert.equal(got.id, want.id, `${where}: token`);
  assert.ok(same(got.logprob, want.logprob), `${where}: logprob ${got.logprob} ≠ ${want.logprob}`);
  assert.deepEqual(got.top.map((a) => a.id), want.top.map((a) => a.id), `${where}: top ids`);
  got.top.forEach((a, k) => assert.ok(same(a.logprob, want.top[k].logprob), `${where}: top[${k}] logprob`));
}

/** Runs both samplers `steps` tokens on fresh logits each step (feeding the chosen tokens back as counts) and compares every step. */
function compare(V: number, shape: Shape, over: Partial<SamplingParams>, steps: number, seed: number, maskShare: number | null): void {
  const p: SamplingParams = { temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed, ...over };
  const fast = createSampler(p);
  const oracle = oracleSampler(p);
  const inputs = createRng(seed * 7919 + V);
  const counts = new Map<number, number>();
  for (let step = 0; step < steps; step++) {
    const logits = randomLogits(V, shape, inputs);
    const mask = maskShare === null ? null : randomMask(V, maskShare, inputs);
    const where = `V ${V} ${shape} ${JSON.stringify({ ...over, logitBias: [...p.logitBias] })} mask ${maskShare} step ${step}`;
    const want = oracle.next(Float32Array.from(logits), counts, mask);
    const got = fast.next(Float32Array.from(logits), counts, mask);
    assertSameToken(got, want, where);
    counts.set(want.id, (counts.get(want.id) ?? 0) + 1);
  }
}

const temperatures = [0, 0.7, 1, 1.6];
const topPs = [1, 0.9, 0.5, 0.01, 1 - 1e-12];
const topLogprobs = [null, 0, 1, 5, 20];

test('vocab 512: every combination of temperature, top_p, top_logprobs, bias, penalties and masks draws as before', () => {
  let seed = 1;
  for (const shape of ['peaked', 'flat', 'ties'] as const) {
    for (const temperature of temperatures) {
      for (const topP of topPs) {
        for (const top of topLogprobs) {
          const bias = seed % 3 === 0 ? new Map([[3, 100], [7, -100], [511, 2.5], [9999, 5]]) : new Map<number, number>();
          const penalties = seed % 2 === 0 ? { presencePenalty: 0.5, frequencyPenalty: 0.3 } : {};
          const maskShare = seed % 4 === 1 ? 0.3 : seed % 4 === 3 ? 0.01 : null;
          compare(512, shape, { temperature, topP, topLogprobs: top, logitBias: bias, ...penalties }, 6, seed++, maskShare);
        }
      }
    }
  }
});

test('vocab 128256: sampled paths with and without top_p, logprobs, bias, penalties and masks draw as before', () => {
  const cases: [Shape, Partial<SamplingParams>, number | null][] = [
    ['peaked', { temperature: 0.7 }, null],
    ['peaked', { temperature: 0.7, topP: 0.9, topLogprobs: 5 }, null],
    ['flat', { temperature: 1, topP: 0.9 }, null],
    ['ties', { temperature: 1.3, topP: 0.95, topLogprobs: 20 }, null],
    ['peaked', { temperature: 1, topP: 0.5, logitBias: new Map([[100, 100], [128255, -3]]), presencePenalty: 0.4, frequencyPenalty: 0.2 }, null],
    ['peaked', { temperature: 0.7, topP: 0.9, topLogprobs: 3 }, 0.001],
    ['flat', { temperature: 0, topLogprobs: 20, frequencyPenalty: 1 }, 0.5],
    ['peaked', { temperature: 1, topP: 1 - 1e-12 }, null],
  ];
  cases.forEach(([shape, over, maskShare], k) => compare(128256, shape, over, 3, 100 + k, maskShare));
});

test('prompt scoring logprobs (tokenLogprobs on raw float32 logits) are unchanged', () => {
  const rng = createRng(5);
  for (const V of [512, 128256]) {
    for (const shape of ['peaked', 'flat', 'ties'] as const) {
      const logits = randomLogits(V, shape, rng);
      for (const top of [0, 1, 5, 20]) {
        const id = Math.floor(rng.float() * V);
        assertSameToken(tokenLogprobs(logits, id, top), oracleTokenLogprobs(logits, id, top), `V ${V} ${shape} top ${top}`);
      }
    }
  }
});

test('degenerate rows (every token masked, an infinite or NaN logit) give what the oracle gave', () => {
  const rows: Float32Array[] = [
    new Float32Array(64).fill(-Infinity),
    Float32Array.from({ length: 64 }, (_, i) => (i === 9 ? Infinity : Math.sin(i))),
    Float32Array.from({ length: 64 }, (_, i) => (i === 9 ? NaN : Math.sin(i))),
  ];
  for (const [r, row] of rows.entries()) {
    for (const over of [{ temperature: 1 }, { temperature: 0.7, topP: 0.9, topLogprobs: 3 }, { temperature: 0, topLogprobs: 2 }] as Partial<SamplingParams>[]) {
      const p: SamplingParams = { temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed: 3, ...over };
      assertSameToken(createSampler(p).next(Float32Array.from(row), new Map()), oracleSampler(p).next(Float32Array.from(row), new Map()), `row ${r} ${JSON.stringify(over)}`);
    }
  }
});

test('samplers of concurrent requests interleaved token by token (sharing scratch buffers) each draw as alone', () => {
  const overs: Partial<SamplingParams>[] = [{ temperature: 0.7, topP: 0.9, topLogprobs: 3 }, { temperature: 1, topLogprobs: 2, frequencyPenalty: 0.5 }, { temperature: 1.2, topP: 0.5 }];
  const ps = overs.map((over, k): SamplingParams => ({ temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed: 40 + k, ...over }));
  const fast = ps.map(createSampler);
  const oracle = ps.map(oracleSampler);
  const inputs = createRng(11);
  const counts = ps.map(() => new Map<number, number>());
  for (let step = 0; step < 20; step++) {
    for (let k = 0; k < ps.length; k++) {
      const logits = randomLogits(512, 'peaked', inputs);
      const want = oracle[k].next(Float32Array.from(logits), counts[k]);
      assertSameToken(fast[k].next(Float32Array.from(logits), counts[k]), want, `sampler ${k} step ${step}`);
      counts[k].set(want.id, (counts[k].get(want.id) ?? 0) + 1);
    }
  }
});
