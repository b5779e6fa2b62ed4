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
  const adjusted = p.logitBias.size > 0 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
  return {
    next(raw, counts, mask) {
      if (mask) applyTokenMask(raw, mask);
      // Plain greedy decoding needs no copy of the logits.
      if (p.temperature === 0 && p.topLogprobs === null && !adjusted) return { id: argmax(raw), logprob: NaN, top: [] };
      const V = raw.length;
      const scratch = drawScratch(V);
      const logits = scratch.logits; // [V]
      logits.set(raw);
      for (const [id, bias] of p.logitBias) if (id >= 0 && id < V) logits[id] += bias;
      if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
        for (const [id, n] of counts) logits[id] -= p.presencePenalty + p.frequencyPenalty * n;
      }
      const id = p.temperature === 0 ? argmax(logits) : draw(logits, p.temperature, p.topP, rng, scratch);
      if (p.topLogprobs === null) return { id, logprob: NaN, top: [] };
      // At temperature 1 the draw normalised these very logits: its log Σ exp is the one the logprobs need.
      return tokenLogprobs(logits, id, p.topLogprobs, p.temperature === 1 ? scratch.lse : undefined);
    },
  };
}

/**
 * Token `id` with its log-probability under softmax(logits) and the `top` most likely alternatives: for sampled tokens
 * (on the penalised, biased logits) and for prompt scoring (`echo` with `logprobs`: the model's raw logits). `lse` is
 * log Σ exp(logits), passed when the caller already computed it.
 */
export function tokenLogprobs(logits: Float32Array | Float64Array, id: number, top: number, lse = logSumExp(logits, 1)): SampledToken {
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

/** max over x of x / t, NaN if any is NaN (as Math.max over all of them). */
function maxOver(x: Float32Array | Float64Array, t: number): number {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i] / t);
  return m;
}

/** log Σ exp(x / t). */
function logSumExp(x: Float32Array | Float64Array, t: number): number {
  const m = maxOver(x, t);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] / t - m);
  return m + Math.log(s);
}

/** Indices of the k largest values, largest first (ties: lower index first). */
function topK(x: Float32Array | Float64Array, k: number): number[] {
  const idx: number[] = [];
  let smallestKept = NaN; // x[idx[k - 1]] once k are kept: most tokens are rejected by this one comparison
  for (let i = 0; i < x.length; i++) {
    if (idx.length < k) idx.push(i);
    else if (x[i] > smallestKept) idx[k - 1] = i;
    else continue;
    for (let j = idx.length - 1; j > 0 && x[idx[j - 1]] < x[idx[j]]; j--) {
      const swap = idx[j - 1];
      idx[j - 1] = idx[j];
      idx[j] = swap;
    }
    if (idx.length === k) smallestKept = x[idx[k - 1]];
  }
  return idx;
}

// top_p candidates are found from a histogram of the mass over z = x/t − max, BUCKETS_PER_NAT buckets per nat down to
// −BUCKET_DEPTH (everything lower shares the last bucket), so only the tokens near the top are sorted, not the vocabulary.
const BUCKETS_PER_NAT = 8;
const BUCKET_DEPTH = 32;
const BUCKETS = BUCKETS_PER_NAT * BUCKET_DEPTH;

interface DrawScratch {
  logits: Float64Array; // [V] the penalised, biased logits
  probs: Float64Array; // [V] softmax(logits / t), written for the top_p candidates only
  massPerBucket: Float64Array; // [BUCKETS] Σ exp(z) per bucket
  order: number[]; // top_p candidates, most likely first
  lse: number; // log Σ exp(logits / t) of the last draw
}

// One scratch per vocabulary size, shared by all samplers: next() runs to completion before another starts, and a
// scratch per request would hold megabytes per concurrent sequence at 128k vocabularies.
const scratchByVocab = new Map<number, DrawScratch>();

function drawScratch(V: number): DrawScratch {
  let scratch = scratchByVocab.get(V);
  if (!scratch) {
    scratch = { logits: new Float64Array(V), probs: new Float64Array(V), massPerBucket: new Float64Array(BUCKETS), order: [], lse: NaN };
    scratchByVocab.set(V, scratch);
  }
  return scratch;
}

/** The histogram bucket of z = x/t − max ≤ 0: 0 for the most likely tokens; NaN and −Infinity go to the last one. */
function bucketOf(z: number): number {
  return z > -BUCKET_DEPTH ? (-z * BUCKETS_PER_NAT) | 0 : BUCKETS - 1;
}

/**
 * Samples from softmax(logits / t) restricted to the smallest set of most likely tokens whose mass reaches topP (ties:
 * lower id first), consuming one rng draw. Probabilities are computed as exp(x/t − logsumexp) and summed in the same
 * order as a full sort of the vocabulary would, so the choice is bit-for-bit that of the plain algorithm.
 */
function draw(logits: Float64Array, t: number, topP: number, rng: Rng, scratch: DrawScratch): number {
  const V = logits.length;
  if (!(topP < 1)) {
    const lse = (scratch.lse = logSumExp(logits, t));
    let u = rng.float();
    for (let i = 0; i < V; i++) {
      u -= Math.exp(logits[i] / t - lse);
      if (u < 0) return i;
    }
    return V - 1; // rounding left u ≥ 0: the last token
  }
  const m = maxOver(logits, t);
  const hist = scratch.massPerBucket.fill(0);
  let s = 0;
  for (let i = 0; i < V; i++) {
    const z = logits[i] / t - m;
    const e = Math.exp(z);
    s += e;
    hist[bucketOf(z)] += e;
  }
  const lse = (scratch.lse = m + Math.log(s));
  // The buckets that hold topP of the mass, plus the next non-empty one so that the cut-off token is never the least
  // likely candidate (every token outside is then strictly less likely than it, whatever the rounding of exp).
  let last = 0;
  for (let cum = hist[0]; last < BUCKETS - 1 && !(cum >= topP * s); ) cum += hist[++last];
  while (last < BUCKETS - 1 && hist[++last] === 0);
  let { kept, mass } = nucleus(logits, t, m, lse, topP, last, scratch);
  const { order, probs } = scratch;
  // Rounding kept the sum of the candidates below topP, or the cut-off ties with the least likely candidate: sort them all.
  if (order.length < V && (mass < topP || probs[order[kept - 1]] === probs[order[order.length - 1]])) ({ kept, mass } = nucleus(logits, t, m, lse, topP, BUCKETS - 1, scratch));
  let u = rng.float() * mass;
  for (let k = 0; k < kept; k++) {
    u -= probs[order[k]];
    if (u < 0) return order[k];
  }
  return order[kept - 1]; // rounding left u ≥ 0: the last kept token
}

/**
 * Sorts the tokens of buckets 0..last (bucketed by x/t − m as the histogram was) by probability, ties lower id first,
 * into scratch.order, and counts how many of them it takes, most likely first, for their mass to reach topP.
 */
function nucleus(logits: Float64Array, t: number, m: number, lse: number, topP: number, last: number, scratch: DrawScratch): { kept: number; mass: number } {
  const { order, probs } = scratch;
  order.length = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i] / t;
    if (last === BUCKETS - 1 || bucketOf(x - m) <= last) {
      probs[i] = Math.exp(x - lse);
      order.push(i);
    }
  }
  order.sort((a, b) => probs[b] - probs[a] || a - b);
  let kept = 0;
  let mass = 0;
  while (kept < order.length && mass < topP) mass += probs[order[kept++]];
  return { kept, mass };
}
