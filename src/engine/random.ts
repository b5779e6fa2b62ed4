// A small seeded PRNG (xoshiro128**, seeded by splitmix32) so every random initialisation is reproducible from a seed.

export interface Rng {
  /** Next 32 random bits as an unsigned integer. */
  uint32(): number;
  /** Uniform in [0, 1) with 24 random bits, so the value is exact in float32. */
  float(): number;
  /** Standard normal (Box–Muller). */
  normal(): number;
}

/** The splitmix32 finalizer: a well-mixed 32-bit function of one 32-bit word. */
function mix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** splitmix32: spreads one integer seed over the four xoshiro state words. */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    return mix32(s);
  };
}

/** A seed for stream `stream` (an epoch, a layer…) of a job seeded with `seed`: neighbouring streams are unrelated. */
export function streamSeed(seed: number, stream: number): number {
  return mix32(seed ^ Math.imul(stream + 1, 0x9e3779b9));
}

/** Same seed (an integer; only its low 32 bits count) ⇒ same sequence, on every platform. */
export function createRng(seed: number): Rng {
  if (!Number.isInteger(seed)) throw new Error(`createRng: seed must be an integer, got ${seed}`);
  const init = splitmix32(seed);
  let a = init();
  let b = init();
  let c = init();
  let d = init();
  const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;
  const uint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    return result;
  };
  const float = (): number => (uint32() >>> 8) / 16777216;
  const normal = (): number => {
    // 1 - u keeps the log argument in (0, 1].
    const u = 1 - float();
    const v = float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  return { uint32, float, normal };
}

/**
 * A dropout keep-mask as a pure function of (seed, position): out[i] = 0 with probability `ratio` (to 1/65536), else 1.
 * Each splitmix32 output (counter i/2) decides two positions with 16 bits each (half the hashing of one per position),
 * so a restarted job recomputes exactly the masks it would have drawn.
 */
export function fillKeepMask(out: Uint8Array, seed: number, ratio: number): Uint8Array {
  const drop = Math.round(ratio * 65536); // 16-bit draw < drop: dropped
  const s = seed >>> 0;
  const pairs = out.length >>> 1;
  for (let k = 0; k < pairs; k++) {
    const u = mix32(s + Math.imul(k + 1, 0x9e3779b9));
    out[2 * k] = (u & 0xffff) >= drop ? 1 : 0;
    out[2 * k + 1] = u >>> 16 >= drop ? 1 : 0;
  }
  if (out.length & 1) out[out.length - 1] = (mix32(s + Math.imul(pairs + 1, 0x9e3779b9)) & 0xffff) >= drop ? 1 : 0;
  return out;
}

/** Fills `out` with uniform values in [lo, hi). */
export function fillUniform(rng: Rng, out: Float32Array, lo: number, hi: number): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = lo + (hi - lo) * rng.float();
  return out;
}

/** Fills `out` with normal values of the given mean and standard deviation. */
export function fillNormal(rng: Rng, out: Float32Array, mean: number, std: number): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = mean + std * rng.normal();
  return out;
}
