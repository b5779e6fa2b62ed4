// Matrices held block-quantized and frozen: projections through onnxruntime's 4/8-bit matmul kernels, embedding rows and
// whole matrices (the input gradient, the training LM head) through an in-graph dequantization.
import { attrInt, attrString, CONTRIB_DOMAIN, type Node, type Tensor } from './graph.ts';
import * as op from './ops.ts';

// Dims: M rows, K input features, N output features, Q = K / blockSize blocks per row, E values per code byte.

export type QuantKernel = 'nf4' | 'int4' | 'int8';

/**
 * A quantized [N, K] weight, each part an initializer made on first call (so a graph holds only the views it uses): the
 * uint8 codes as `codes()` in the kernel's layout (nf4: bitsandbytes, flat [N·K/2]; int4/int8: MatMulNBits,
 * [N, Q, blockSize·bits/8]) and as `codeRows()` [N, K·bits/8] for row lookups; one fp32 scale per block (the absmax
 * for nf4) as `kernelScales()` in the shape the kernel accepts (MatMulNBits: [N, Q]) and as `scales()` [N, Q, 1] for
 * the dequantization (views are initializers over the same bytes, as a Reshape of an initializer would be
 * constant-folded into a copy); and `levels()` [256, E], a constant mapping a code byte to its E unscaled values in
 * weight order (byteLevels() in models/quantize.ts).
 */
export interface QuantizedWeight {
  format: QuantKernel;
  rows: number; // N
  cols: number; // K
  blockSize: number;
  codes: () => Tensor;
  kernelScales: () => Tensor;
  scales: () => Tensor;
  codeRows: () => Tensor;
  levels: () => Tensor;
}

const bitsOf = (format: QuantKernel) => (format === 'int8' ? 8 : 4);

/**
 * deq(W) [N, K] in the graph. nf4: MatMulBnb4 itself, told the weight is [N·K, 1] and multiplied by [[1]] — its
 * kernel dequantizes the flat bitsandbytes buffer block by block whatever the [N, K] split, so the product is deq(W)
 * exactly (×1 is exact), at ~1.5 ns a weight on 2 threads against ~2.8 for the level-table Gather below. int4/int8:
 * codes → their levels (a Gather from the 256-entry table) × each block's scale; the codes pass through
 * DequantizeLinear first (an exact uint8 → float copy) because onnxruntime never constant-folds DequantizeLinear: a
 * chain starting from the initializers alone would otherwise be folded into an fp32 copy of every weight at session
 * creation, undoing the saving. Both routes start from a 1 computed from one element of `after` (·0 + 1): a chain that
 * depends on initializers alone may run at any time, and onnxruntime's order ran the backward pass's dequantizations
 * together before their Gemms (measured: 24 of them alive at once), so it waits for the tensor its consumer waits for
 * and lives only until that consumer ran. The element passes through an int32 Cast, so autodiff sees no path from
 * `after` into the weight (a forward use, such as the training LM head, adds no gradient).
 */
export function dequantized(w: QuantizedWeight, after: Tensor): Tensor {
  const g = after.graph;
  const { rows: N, cols: K } = w;
  const codes = w.codes();
  const first = op.reshape(op.slice(after, after.shape.map(() => 0), after.shape.map(() => 1), after.shape.map((_, i) => i)), [1, 1]); // [1, 1]
  const one = op.add(op.mul(op.cast(op.cast(first, 'int32'), 'float32'), g.scalar(0, 'float32')), g.scalar(1, 'float32')); // [1, 1] 1, once `after` exists
  if (w.format === 'nf4') {
    const attrs = { K: attrInt(1), N: attrInt(N * K), block_size: attrInt(w.blockSize), quant_type: attrInt(1) };
    const flat = g.emit('MatMulBnb4', [one, codes, w.kernelScales()], attrs, [['float32', [1, N * K]]], undefined, CONTRIB_DOMAIN)[0]; // [1, N·K]
    return op.reshape(flat, [N, K]); // [N, K]
  }
  const bytes = g.emit('DequantizeLinear', [codes, op.reshape(one, []), g.constant([0], 'uint8', [])], {}, [['float32', codes.shape]])[0]; // codes' shape
  return op.reshape(scaledLevels(w, op.cast(bytes, 'int32'), w.scales()), [N, K]); // [N, K]
}

/**
 * deq(W)[ids] [n, K] for int ids of any shape (n of them): the rows' code bytes and block scales gathered, then
 * dequantized as dequantized() does, so only the n rows ever exist in fp32 (the embedding lookup of a quantized table).
 */
export function quantizedRows(w: QuantizedWeight, ids: Tensor): Tensor {
  const { cols: K, blockSize } = w;
  const codes = op.cast(op.gather(w.codeRows(), ids, 0), 'int32'); // [...ids, K·bits/8]
  const scales = op.reshape(op.gather(w.scales(), ids, 0), [-1, K / blockSize, 1]); // [n, Q, 1]
  return op.reshape(scaledLevels(w, codes, scales), [-1, K]); // [n, K]
}

/** Each code byte's levels (a Gather from the 256-entry table) × its block's scale: codes int32 [.., bytes], scales [m, Q, 1] → [m, Q, blockSize]. */
function scaledLevels(w: QuantizedWeight, codes: Tensor, scales: Tensor): Tensor {
  const E = w.format === 'int8' ? 1 : 2;
  const table = w.levels(); // [256, E]
  if (table.shape[1] !== E) throw new Error(`QuantizedLinear: a ${w.format} level table has ${E} values a byte, not ${table}`);
  const levels = op.reshape(op.gather(table, codes, 0), [-1, w.cols / w.blockSize, w.blockSize]); // [m, Q, blockSize]
  return op.mul(levels, scales); // [m, Q, blockSize]
}

/**
 * y = x·deq(W)ᵀ + c, x [M, K], c [M, N] or null: one fused node (autodiff's QuantizedLinear rule gives dx = g·deq(W) and
 * dc = g; the weight is frozen). Forward: nf4 runs com.microsoft MatMulBnb4, int4/int8 MatMulNBits (accuracy level 0:
 * fp32 arithmetic over the dequantized blocks, so y equals x·deq(W)ᵀ to float rounding).
 */
export function quantizedLinear(x: Tensor, w: QuantizedWeight, c: Tensor | null): Tensor {
  const g = x.graph;
  const { rows: N, cols: K } = w;
  if (x.rank !== 2 || x.shape[1] !== K) throw new Error(`QuantizedLinear: input ${x} does not have ${K} columns (weight [${N}, ${K}])`);
  const attrs = { format: attrString(w.format), block_size: attrInt(w.blockSize), N: attrInt(N), K: attrInt(K) };
  const [codes, scales] = [w.codes(), w.kernelScales()];
  const inputs = [x, codes, scales, ...(c ? [c] : [])];
  const [y] = g.fuse('QuantizedLinear', inputs, attrs, () => {
    const kernelAttrs = { K: attrInt(K), N: attrInt(N), block_size: attrInt(w.blockSize) };
    const y =
      w.format === 'nf4'
        ? g.emit('MatMulBnb4', [x, codes, scales], { ...kernelAttrs, quant_type: attrInt(1) }, [['float32', [x.shape[0], N]]], undefined, CONTRIB_DOMAIN)[0]
        : g.emit('MatMulNBits', [x, codes, scales], { ...kernelAttrs, bits: attrInt(bitsOf(w.format)), accuracy_level: attrInt(0) }, [['float32', [x.shape[0], N]]], undefined, CONTRIB_DOMAIN)[0]; // [M, N]
    return { outputs: [c ? op.add(y, c) : y] };
  });
  weightOfOutput.set(y, w);
  return y;
}

/**
 * Whether the forward kernel dequantizes the whole weight into fp32 scratch on every call: onnxruntime's CPU MatMulBnb4
 * does (then one fp32 GEMM), so nf4 costs a transient fp32 copy of the matrix per call; MatMulNBits prepacks instead.
 */
export function dequantizesWholeWeight(w: QuantizedWeight): boolean {
  return w.format === 'nf4';
}

/** Each QuantizedLinear node's weight, by the node's output (the weight's lazily made parts are no node inputs). */
const weightOfOutput = new WeakMap<Tensor, QuantizedWeight>();

/** The weight a QuantizedLinear node multiplies by (for its VJP rule). */
export function quantizedWeightOf(n: Node): QuantizedWeight {
  const w = weightOfOutput.get(n.outputs[0]);
  if (!w) throw new Error(`QuantizedLinear: node with output ${n.outputs[0]} was not made by quantizedLinear()`);
  return w;
}
