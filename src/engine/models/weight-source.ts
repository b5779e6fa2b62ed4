// Base weights as graph tensors: external initializers into the aligned weight cache, or embedded ones for tests; matrices fp32 or block-quantized.
import { basename } from 'node:path';
import type { ExternalData, Graph, Tensor, TypedData } from '../onnx/graph.ts';
import * as op from '../onnx/ops.ts';
import { dequantized, dequantizesWholeWeight, quantizedLinear, quantizedRows, type QuantizedWeight } from '../onnx/quantized.ts';
import { byteLevels, QUANT_LAYOUT, type QuantizedTensor } from './quantize.ts';
import type { WeightCache } from './weight-cache.ts';

/** Base weights by HF name, as tensors of one graph. */
export interface WeightSource {
  /** A weight kept in the compute dtype (norms, biases, and every matrix of an fp32 base). */
  (name: string): Tensor;
  /**
   * x·Wᵀ + c for the matrix `name` [out, in], x [M, in], c [M, out] or null: a Gemm, or a QuantizedLinear over a
   * quantized W; with `rowBlock`, a kernel that dequantizes its whole weight per call runs per block of that many rows
   * of W (its scratch is then one block, not the whole matrix: a 128k-vocabulary head is 1 GB of fp32).
   */
  linear(name: string, x: Tensor, c: Tensor | null, rowBlock?: number): Tensor;
  /** Rows `ids` (int, any shape) of the matrix `name` [V, D] as [n, D]: a Gather, or only those rows dequantized. */
  rows(name: string, ids: Tensor): Tensor;
  /**
   * The matrix `name` [out, in] in the compute dtype, as blocks of at most `rowBlock` rows [≤ rowBlock, in] in order:
   * the weight itself (one block) in fp32; a quantized one dequantized in the graph once `after` exists, block after
   * block (each waits for the previous one, so only one block's dequantization is in flight; transient).
   */
  matrixBlocks(name: string, after: Tensor, rowBlock: number): Tensor[];
}
/** Makes a graph's WeightSource (each weight becomes its initializers, on first use). */
export type WeightFactory = (g: Graph) => WeightSource;

/**
 * Where a quantized weight's initializers come from: embedded bytes, or external data in the cache file. `from` is the
 * byte offset into the part (a block of rows starts past the first).
 */
type QuantizedInitializers = (part: 'codes' | 'scales', name: string, dtype: 'uint8' | 'float32', dims: number[], from: number) => Tensor;

/**
 * Rows per block when a head is multiplied block by block (see WeightSource.linear's `rowBlock`): 4096 rows start every
 * block's codes and scales at a 4096-byte boundary of the cache file, where onnxruntime maps them rather than copying.
 */
export const HEAD_ROW_BLOCK = 4096;

/**
 * The one way a graph gets a weight's tensors: `float(name)` makes a compute-dtype initializer, `quantized(name)` says
 * where a quantized matrix's parts are (null when the weight is not quantized). Each weight (or block of its rows) is
 * made once per graph.
 */
function weightSource(
  g: Graph,
  float: (name: string) => Tensor,
  quantized: (name: string) => { q: Pick<QuantizedTensor, 'format' | 'dims' | 'blockSize'>; init: QuantizedInitializers } | null,
): WeightSource {
  const floats = new Map<string, Tensor>();
  const quants = new Map<string, QuantizedWeight | null>();
  const source = (name: string) => {
    if (!floats.has(name)) floats.set(name, float(name));
    return floats.get(name)!;
  };
  /** The quantized matrix `name` (rows [first, end) of it when given), or null when it is not quantized. */
  const quantizedWeight = (name: string, first = 0, end?: number): QuantizedWeight | null => {
    const key = end === undefined ? name : `${name}.rows_${first}_${end}`;
    if (quants.has(key)) return quants.get(key)!;
    const found = quantized(name);
    if (!found) return null;
    const { q, init } = found;
    const K = q.dims[1];
    const N = (end ?? q.dims[0]) - first;
    const { bits } = QUANT_LAYOUT[q.format];
    const { blockSize } = q;
    const Q = K / blockSize;
    const E = q.format === 'int8' ? 1 : 2;
    const once = (make: () => Tensor) => {
      let t: Tensor | undefined;
      return () => (t ??= make());
    };
    const codes = (view: string, dims: number[]) => once(() => init('codes', `${key}.${view}`, 'uint8', dims, (first * K * bits) / 8));
    const scales = (view: string, dims: number[]) => once(() => init('scales', `${key}.${view}`, 'float32', dims, first * Q * 4));
    const blockScales = scales('scales', [N, Q, 1]); // [N, Q, 1]
    const w: QuantizedWeight = {
      format: q.format,
      rows: N,
      cols: K,
      blockSize,
      codes: codes('codes', q.format === 'nf4' ? [(N * K) / 2] : [N, Q, (blockSize * bits) / 8]),
      codeRows: codes('code_rows', [N, (K * bits) / 8]), // [N, K·bits/8]
      scales: blockScales,
      kernelScales: q.format === 'nf4' ? blockScales : scales('kernel_scales', [N, Q]), // MatMulNBits wants [N, Q]
      levels: () => g.constant(byteLevels(q.format), 'float32', [256, E]), // [256, E]
    };
    quants.set(key, w);
    return w;
  };
  return Object.assign(source, {
    linear(name: string, x: Tensor, c: Tensor | null, rowBlock?: number): Tensor {
      const w = quantizedWeight(name);
      if (!w) return op.gemm(x, source(name), c, { transB: true }); // [M, out]
      if (!rowBlock || !dequantizesWholeWeight(w) || w.rows <= rowBlock) return quantizedLinear(x, w, c); // [M, out]
      const blocks = [];
      for (let first = 0; first < w.rows; first += rowBlock) blocks.push(quantizedLinear(x, quantizedWeight(name, first, Math.min(first + rowBlock, w.rows))!, null)); // [M, ≤ rowBlock]
      const y = op.concat(blocks, 1); // [M, out]
      return c ? op.add(y, c) : y;
    },
    rows(name: string, ids: Tensor): Tensor {
      const w = quantizedWeight(name);
      const table = w ? null : source(name);
      return w ? quantizedRows(w, ids) : op.reshape(op.gather(table!, ids, 0), [-1, table!.shape[1] as number]); // [n, D]
    },
    matrixBlocks(name: string, after: Tensor, rowBlock: number): Tensor[] {
      const w = quantizedWeight(name);
      if (!w) return [source(name)]; // [out, in]
      const blocks: Tensor[] = [];
      for (let first = 0; first < w.rows; first += rowBlock) {
        const block = w.rows <= rowBlock ? w : quantizedWeight(name, first, Math.min(first + rowBlock, w.rows))!;
        blocks.push(dequantized(block, blocks.at(-1) ?? after)); // [≤ rowBlock, in]
      }
      return blocks;
    },
  });
}

/** Base weights embedded in the graph (tests and the float64 checks); quantized projections need a float32 graph. */
export function embeddedWeights(weights: ReadonlyMap<string, { dims: number[]; data: TypedData } | QuantizedTensor>): WeightFactory {
  return (g) =>
    weightSource(
      g,
      (name) => {
        const w = weights.get(name);
        if (!w) throw new Error(`no base weight ${name}`);
        if ('format' in w) throw new Error(`base weight ${name} is ${w.format}-quantized: use it through linear, rows or matrixBlocks`);
        return g.initializer(name, g.float, w.dims, w.data);
      },
      (name) => {
        const w = weights.get(name);
        if (!w || !('format' in w)) return null;
        const count = (dims: number[]) => dims.reduce((a, b) => a * b, 1);
        const bytes = (part: 'codes' | 'scales', from: number, dims: number[]) =>
          part === 'codes' ? w.codes.subarray(from, from + count(dims)) : w.scales.subarray(from / 4, from / 4 + count(dims));
        return { q: w, init: (part, n, dtype, dims, from) => g.initializer(n, dtype, dims, bytes(part, from, dims)) };
      },
    );
}

/** Base weights as external data in the aligned cache file; save the graph beside it (or load it with the folder option). */
export function cachedWeights(cache: WeightCache): WeightFactory {
  const location = basename(cache.dataPath);
  return (g) =>
    weightSource(
      g,
      (name) => {
        const e = cache.manifest.tensors[name];
        if (!e) throw new Error(`weight cache ${cache.dataPath} has no ${cache.manifest.quantized[name] ? 'fp32 ' : ''}tensor ${name}`);
        if (e.dtype !== g.float) throw new Error(`weight cache holds ${e.dtype}, graph computes in ${g.float}`);
        return g.externalInitializer(name, g.float, e.dims, { location, offset: e.offset, length: e.length });
      },
      (name) => {
        const e = cache.manifest.quantized[name];
        if (!e) return null;
        // Both scale views (see QuantizedWeight) name the same bytes: the pages are mapped, not copied.
        const length = (dtype: 'uint8' | 'float32', dims: number[]) => dims.reduce((a, b) => a * b, dtype === 'uint8' ? 1 : 4);
        return { q: e, init: (part, n, dtype, dims, from) => g.externalInitializer(n, dtype, dims, { location, offset: e[part].offset + from, length: length(dtype, dims) } satisfies ExternalData) };
      },
    );
}
