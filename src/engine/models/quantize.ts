// Block-wise weight quantization of a [N, K] projection (HF [out, in]) into the layouts onnxruntime's kernels read:
// NF4 as bitsandbytes (MatMulBnb4), int4 and int8 as MatMulNBits. Also the reference dequantization (tests, checks).

// Dims: N output rows, K input columns, Q = K / blockSize blocks per row.

export type Precision = 'fp32' | 'nf4' | 'int4' | 'int8';
export type QuantFormat = Exclude<Precision, 'fp32'>;
export const PRECISIONS: readonly Precision[] = ['fp32', 'nf4', 'int4', 'int8'];

/**
 * The 16 NF4 levels exactly as bitsandbytes defines them (functional.py `get_4bit_type('nf4')`, the float32 values its
 * kernels use): quantiles of N(0, 1) scaled to [−1, 1], with an exact 0.
 */
export const NF4_LEVELS: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

/** Per format: bits per code and weights per block (bitsandbytes' and QLoRA's NF4 block 64; MatMulNBits' block 32); a matrix may use a smaller block. */
export const QUANT_LAYOUT: Record<QuantFormat, { bits: 4 | 8; blockSize: number }> = {
  nf4: { bits: 4, blockSize: 64 },
  int4: { bits: 4, blockSize: 32 },
  int8: { bits: 8, blockSize: 32 },
};

/** A quantized [N, K] weight: `codes` in the kernel's byte layout, one fp32 `scales` entry per block (NF4: the absmax). */
export interface QuantizedTensor {
  format: QuantFormat;
  dims: [number, number]; // [N, K]
  blockSize: number;
  codes: Uint8Array; // N·K·bits/8 bytes
  scales: Float32Array; // [N, Q]
}

/** Whether a [N, K] weight can take the format: blocks must tile each row (true of every real model's matrices). */
export function quantizable(dims: readonly number[], format: QuantFormat, blockSize = QUANT_LAYOUT[format].blockSize): boolean {
  return dims.length === 2 && dims[1] % blockSize === 0;
}

// NF4 decision thresholds: midpoints between neighbouring levels (nearest level, as bitsandbytes' dQuantizeNF4 tree).
const NF4_MIDPOINTS = NF4_LEVELS.slice(1).map((v, i) => (v + NF4_LEVELS[i]) / 2);

function nearestNf4(x: number): number {
  let lo = 0;
  let hi = NF4_MIDPOINTS.length; // the code is the number of midpoints below x
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (x > NF4_MIDPOINTS[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Quantizes row-major `w` [N, K]. NF4 (bitsandbytes): code = nearest level of w/absmax per block, two codes a byte, the
 * first in the high nibble. int4/int8 (MatMulNBits, zero point 2^(bits−1) implied): per block the value of largest
 * magnitude m gives scale = m / −2^(bits−1), code = clamp(round(w/scale), −2^(bits−1), 2^(bits−1) − 1) + 2^(bits−1), so m
 * itself is exact; int4 packs two codes a byte, the first in the low nibble.
 */
export function quantize(w: Float32Array, dims: [number, number], format: QuantFormat, blockSize = QUANT_LAYOUT[format].blockSize): QuantizedTensor {
  const [N, K] = dims;
  if (w.length !== N * K) throw new Error(`quantize: ${w.length} values for [${dims}]`);
  if (!quantizable(dims, format, blockSize)) throw new Error(`quantize ${format}: row length ${K} is not a multiple of the block size ${blockSize}`);
  const { bits } = QUANT_LAYOUT[format];
  const blocks = (N * K) / blockSize;
  const codes = new Uint8Array((N * K * bits) / 8);
  const scales = new Float32Array(blocks);
  const half = 1 << (bits - 1); // 8 or 128: the zero point
  for (let b = 0; b < blocks; b++) {
    const start = b * blockSize;
    let m = 0;
    for (let i = start; i < start + blockSize; i++) if (Math.abs(w[i]) > Math.abs(m)) m = w[i];
    if (format === 'nf4') {
      const absmax = Math.abs(m);
      scales[b] = absmax;
      const inv = absmax === 0 ? 0 : 1 / absmax;
      for (let i = start; i < start + blockSize; i += 2) codes[i >> 1] = (nearestNf4(w[i] * inv) << 4) | nearestNf4(w[i + 1] * inv);
      continue;
    }
    const scale = Math.fround(m / -half);
    scales[b] = scale;
    const inv = scale === 0 ? 0 : 1 / scale;
    const code = (x: number) => Math.min(Math.max(Math.round(x * inv), -half), half - 1) + half;
    if (bits === 8) for (let i = start; i < start + blockSize; i++) codes[i] = code(w[i]);
    else for (let i = start; i < start + blockSize; i += 2) codes[i >> 1] = code(w[i]) | (code(w[i + 1]) << 4);
  }
  return { format, dims, blockSize, codes, scales };
}

/**
 * Per byte value, the dequantized (unscaled) values it holds, in weight order: NF4 [level(high), level(low)], int4
 * [low − 8, high − 8], int8 [byte − 128]. The graph's dequantization gathers from this table.
 */
export function byteLevels(format: QuantFormat): Float32Array {
  const perByte = format === 'int8' ? 1 : 2;
  const table = new Float32Array(256 * perByte);
  for (let b = 0; b < 256; b++) {
    if (format === 'nf4') table.set([NF4_LEVELS[b >> 4], NF4_LEVELS[b & 15]], 2 * b);
    else if (format === 'int4') table.set([(b & 15) - 8, (b >> 4) - 8], 2 * b);
    else table[b] = b - 128;
  }
  return table;
}

/** The weight a quantized tensor stands for, row-major [N, K] (what the kernels multiply by). */
export function dequantize(q: QuantizedTensor): Float32Array {
  const [N, K] = q.dims;
  const table = byteLevels(q.format);
  const perByte = q.format === 'int8' ? 1 : 2;
  const out = new Float32Array(N * K);
  for (let i = 0; i < out.length; i++) {
    const level = table[q.codes[Math.floor(i / perByte)] * perByte + (i % perByte)];
    out[i] = Math.fround(level * q.scales[Math.floor(i / q.blockSize)]);
  }
  return out;
}
