// Base weights as graph tensors: external initializers into the aligned weight cache, or embedded ones for tests; matrices fp32 or block-quantized.
import { basename } from 'node:path';
import type { ExternalData, Graph, Tensor, TypedData } from '../onnx/graph.ts';
import * as op from '../onnx/ops.ts';
import { dequantized, quantizedLinear, quantizedRows, type QuantizedWeight } from '../onnx/quantized.ts';
import { byteLevels, QUANT_LAYOUT, type QuantizedTensor } from './quantize.ts';
import type { WeightCache } from './weight-cache.ts';

/** Base weights by HF name, as tensors of one graph. */
export interface WeightSource {
  /** A weight kept in the compute dtype (norms, biases, and every matrix of an fp32 base). */
  (name: string): Tensor;
  /** x·Wᵀ + c for the matrix `name` [out, in], x [M, in], c [M, out] or null: a Gemm, or a QuantizedLinear over a quantized W. */
  linear(name: string, x: Tensor, c: Tensor | null): Tensor;
  /** Rows `ids` (int, any shape) of the matrix `name` [V, D] as [n, D]: a Gather, or only those rows dequantized. */
  rows(name: string, ids: Tensor): Tensor;
  /** The matrix `name` [out, in] whole in the compute dtype: the weight itself, or dequantized in the graph once `after` exists (transient). */
  matrix(name: string, after: Tensor): Tensor;
}
/** Makes a graph's WeightSource (each weight becomes its initializers, on first use). */
export type WeightFactory = (g: Graph) => WeightSource;

/** Where a quantized weight's initializers come from: embedded bytes, or external data in the cache file. */
type QuantizedInitializers = (part: 'codes' | 'scales', name: string, dtype: 'uint8' | 'float32', dims: number[]) => Tensor;

/**
 * The one way a graph gets a weight's tensors: `float(name)` makes a compute-dtype initializer, `quantized(name)` says
 * where a quantized projection's parts are (null when the weight is not quantized). Each weight is made once per graph.
 */
function weightSource(
  g: Graph,
  float: (name: string) => Tensor,
  quantized: (name: string) => { q: Pick<QuantizedTensor, 'format' | 'dims' | 'blockSize'>; init: QuantizedInitializers } | null,
): WeightSource {
  const floats = new Map<string, Tensor>();
  const quants = new Map<string, QuantizedWeight>();
  const source = (name: string) => {
    if (!floats.has(name)) floats.set(name, float(name));
    return floats.get(name)!;
  };
  const quantizedWeight = (name: string): QuantizedWeight | null => {
    if (quants.has(name)) return quants.get(name)!;
    const found = quantized(name);
    if (!found) return null;
    const { q, init } = found;
    const [N, K] = q.dims;
    const { bits, blockSize } = QUANT_LAYOUT[q.format];
    const Q = K / blockSize;
    const E = q.format === 'int8' ? 1 : 2;
    const once = (make: () => Tensor) => {
      let t: Tensor | undefined;
      return () => (t ??= make());
    };
    const scales = once(() => init('scales', `${name}.scales`, 'float32', [N, Q, 1])); // [N, Q, 1]
    const codeRows = once(() => init('codes', `${name}.code_rows`, 'uint8', [N, (K * bits) / 8])); // [N, K·bits/8]
    const w: QuantizedWeight = {
      format: q.format,
      rows: N,
      cols: K,
      blockSize,
      codes: once(() => init('codes', `${name}.codes`, 'uint8', q.format === 'nf4' ? [(N * K) / 2] : [N, Q, (blockSize * bits) / 8])),
      scales,
      codeRows,
      kernelScales: q.format === 'nf4' ? scales : once(() => init('scales', `${name}.kernel_scales`, 'float32', [N, Q])), // MatMulNBits wants [N, Q]
      levels: () => g.constant(byteLevels(q.format), 'float32', [256, E]), // [256, E]
    };
    quants.set(name, w);
    return w;
  };
  return Object.assign(source, {
    linear(name: string, x: Tensor, c: Tensor | null): Tensor {
      const w = quantizedWeight(name);
      return w ? quantizedLinear(x, w, c) : op.gemm(x, source(name), c, { transB: true }); // [M, out]
    },
    rows(name: string, ids: Tensor): Tensor {
      const w = quantizedWeight(name);
      const table = w ? null : source(name);
      return w ? quantizedRows(w, ids) : op.reshape(op.gather(table!, ids, 0), [-1, table!.shape[1] as number]); // [n, D]
    },
    matrix(name: string, after: Tensor): Tensor {
      const w = quantizedWeight(name);
      return w ? dequantized(w, after) : source(name); // [out, in]
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
        if ('format' in w) throw new Error(`base weight ${name} is ${w.format}-quantized: use it through linear, rows or matrix`);
        return g.initializer(name, g.float, w.dims, w.data);
      },
      (name) => {
        const w = weights.get(name);
        if (!w || !('format' in w)) return null;
        return { q: w, init: (part, n, dtype, dims) => g.initializer(n, dtype, dims, part === 'codes' ? w.codes : w.scales) };
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
        return { q: e, init: (part, n, dtype, dims) => g.externalInitializer(n, dtype, dims, { location, ...e[part] } satisfies ExternalData) };
      },
    );
}
