// Picking the next token from a row's logits: logit bias, presence/frequency penalties, temperature (0 = greedy), top_p, a per-request seeded RNG, logprobs.
import { createRng, type Rng } from '../random.ts';

// Dims: V vocab.

export interface SamplingParams {
  temperature: number; // 0 ⇒ greedy
  topP: number; // nucleus mass in (0, 1]
  presencePenalty: number; // subtracted once from every token already generated
  frequencyPenalty: number; // subtracted per occurrence
  logitBias: ReadonlyMap<number, number>; // token id → added to its logit
  /** How many alternatives to report per token; null reports no logprobs at all. */
  topLogprobs: number | null;
  seed: number; // same seed ⇒ same draws
}

export interface SampledToken {
  id: number;
  /** log p(id) under the penalised, biased distribution at temperature 1 (what the hosted API reports); NaN when not asked. */
  logprob: number;
  top: { id: number; logprob: number }[];
}

export interface Sampler {
  /**
   * Picks a token from `logits` [V] given how often each token was generated so far (`counts`), among the tokens `mask`
   * allows when there is one (a grammar's bitmask [ceil(V / 32)]; the logits of the others are set to -Infinity in place).
   */
  next(logits: Float32Array, counts: ReadonlyMap<number, number>, mask?: Int32Array | null): SampledToken;
}

export function createSampler(p: SamplingParams): Sampler {
  const rng: Rng = createRng(p.seed);
  return {
    next(raw, counts, mask) {
      if (mask) applyTokenMask(raw, mask);
      // Plain greedy decoding needs no copy of the logits.
      if (p.temperature === 0 && p.topLogprobs === null && p.logitBias.size === 0 && p.presencePenalty === 0 && p.frequencyPenalty === 0) return { id: argmax(raw), logprob: NaN, top: [] };
      const V = raw.length;
      const logits = Float64Array.from(raw); // [V]
      for (const [id, bias] of p.logitBias) if (id >= 0 && id < V) logits[id] += bias;
      if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
        for (const [id, n] of counts) logits[id] -= p.presencePenalty + p.frequencyPenalty * n;
      }
      const id = p.temperature === 0 ? argmax(logits) : draw(logits, p.temperature, p.topP, rng);
      return p.topLogprobs === null ? { id, logprob: NaN, top: [] } : tokenLogprobs(logits, id, p.topLogprobs);
    },
  };
}

/**
 * Token `id` with its log-probability under softmax(logits) and the `top` most likely alternatives: for sampled tokens
 * (on the penalised, biased logits) and for prompt scoring (`echo` with `logprobs`: the model's raw logits).
 */
export function tokenLogprobs(logits: Float32Array | Float64Array, id: number, top: number): SampledToken {
  const lse = logSumExp(logits, 1);
  // Tokens a grammar forbade (-Infinity) are no alternatives.
  const alternatives = top > 0 ? topK(logits, top).filter((j) => logits[j] > -Infinity) : [];
  return { id, logprob: logits[id] - lse, top: alternatives.map((j) => ({ id: j, logprob: logits[j] - lse })) };
}

/**
 * Sets the logits [V] of the tokens `mask` forbids to -Infinity: bit (id & 31) of word (id >> 5) set = allowed
 * (xgrammar's layout). Whole words are handled at once (all-allowed words skipped, all-forbidden ones filled); in the
 * others only the cleared bits are visited.
 */
export function applyTokenMask(logits: Float32Array, mask: Int32Array): void {
  const V = logits.length;
  for (let w = 0; w < mask.length; w++) {
    const bits = mask[w];
    if (bits === -1) continue;
    const from = w << 5;
    if (bits === 0) {
      logits.fill(-Infinity, from, Math.min(from + 32, V));
      continue;
    }
    for (let forbidden = ~bits; forbidden !== 0; forbidden &= forbidden - 1) {
      const id = from + 31 - Math.clz32(forbidden & -forbidden); // the lowest cleared bit
      if (id < V) logits[id] = -Infinity;
    }
  }
}

function argmax(x: Float32Array | Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** log Σ exp(x / t). */
function logSumExp(x: Float32Array | Float64Array, t: number): number {
  let m = -Infinity;
  for (const v of x) m = Math.max(m, v / t);
  let s = 0;
  for (const v of x) s += Math.exp(v / t - m);
  return m + Math.log(s);
}

/** Indices of the k largest values, largest first (ties: lower index first). */
function topK(x: Float32Array | Float64Array, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (idx.length < k) idx.push(i);
    else if (x[i] > x[idx[k - 1]]) idx[k - 1] = i;
    else continue;
    for (let j = idx.length - 1; j > 0 && x[idx[j - 1]] < x[idx[j]]; j--) [idx[j - 1], idx[j]] = [idx[j], idx[j - 1]];
  }
  return idx;
}

/** Samples from softmax(logits / t) restricted to the smallest set of most likely tokens whose mass reaches topP. */
function draw(logits: Float64Array, t: number, topP: number, rng: Rng): number {
  const lse = logSumExp(logits, t);
  const probs = logits.map((v) => Math.exp(v / t - lse)); // [V]
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
  return order[order.length - 1]; // rounding left u ≥ 0: the last kept token
}
