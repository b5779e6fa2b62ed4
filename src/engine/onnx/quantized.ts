// Projections through block-quantized frozen weights: onnxruntime's 4/8-bit matmul kernels forward, an in-graph dequantization for the input gradient.
import { attrInt, attrString, CONTRIB_DOMAIN, type Node, type Tensor } from './graph.ts';
import * as op from './ops.ts';

// Dims: M rows, K input features, N output features, Q = K / blockSize blocks per row, E values per code byte.

export type QuantKernel = 'nf4' | 'int4' | 'int8';

/**
 * A quantized [N, K] weight: `codes` uint8 in the kernel's layout (nf4: bitsandbytes, flat [N·K/2]; int4/int8:
 * MatMulNBits, [N, Q, blockSize·bits/8]), one fp32 scale per block (the absmax for nf4) as `kernelScales` in the shape
 * the kernel accepts (MatMulNBits: [N, Q]) and, made on first call, as `scales()` [N, Q, 1] for the dequantization (two
 * initializers over the same bytes, as an Unsqueeze of an initializer would be constant-folded into a copy; graphs
 * without a backward pass never make the second), and `levels()` [256, E], a constant mapping a code byte to its E
 * unscaled values in weight order (byteLevels() in models/quantize.ts).
 */
export interface QuantizedWeight {
  format: QuantKernel;
  rows: number; // N
  cols: number; // K
  blockSize: number;
  codes: Tensor;
  kernelScales: Tensor;
  scales: () => Tensor;
  levels: () => Tensor;
}

const bitsOf = (format: QuantKernel) => (format === 'int8' ? 8 : 4);

/**
 * deq(W) [N, K] in the graph: codes → their levels (a Gather from the 256-entry table) × each block's scale. The codes
 * pass through DequantizeLinear first (an exact uint8 → float copy) because onnxruntime never constant-folds
 * DequantizeLinear: a chain starting from the initializers alone would otherwise be folded into an fp32 copy of every
 * weight at session creation, undoing the saving. Its scale, 1, is computed from one element of `after` (·0 + 1): a
 * chain that depends on initializers alone may run at any time, and onnxruntime's order ran the backward pass's
 * dequantizations together before their Gemms (measured: 24 of them alive at once), so it waits for the tensor its
 * consumer waits for and lives only until that consumer ran.
 */
export function dequantized(w: QuantizedWeight, after: Tensor): Tensor {
  const g = w.codes.graph;
  const { rows: N, cols: K, blockSize } = w;
  const E = w.format === 'int8' ? 1 : 2;
  const first = op.reshape(op.slice(after, after.shape.map(() => 0), after.shape.map(() => 1), after.shape.map((_, i) => i)), []); // []
  const one = op.add(op.mul(first, g.scalar(0, 'float32')), g.scalar(1, 'float32')); // [] 1, once `after` exists
  const bytes = g.emit('DequantizeLinear', [w.codes, one, g.constant([0], 'uint8', [])], {}, [['float32', w.codes.shape]])[0]; // codes' shape
  const table = w.levels(); // [256, E]
  if (table.shape[1] !== E) throw new Error(`QuantizedLinear: a ${w.format} level table has ${E} values a byte, not ${table}`);
  const levels = op.reshape(op.gather(table, op.cast(bytes, 'int32'), 0), [N, K / blockSize, blockSize]); // [N, Q, blockSize]
  return op.reshape(op.mul(levels, w.scales()), [N, K]); // [N, K]
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
  const inputs = [x, w.codes, w.kernelScales, ...(c ? [c] : [])];
  const [y] = g.fuse('QuantizedLinear', inputs, attrs, () => {
    const kernelAttrs = { K: attrInt(K), N: attrInt(N), block_size: attrInt(w.blockSize) };
    const y =
      w.format === 'nf4'
        ? g.emit('MatMulBnb4', [x, w.codes, w.kernelScales], { ...kernelAttrs, quant_type: attrInt(1) }, [['float32', [x.shape[0], N]]], undefined, CONTRIB_DOMAIN)[0]
        : g.emit('MatMulNBits', [x, w.codes, w.kernelScales], { ...kernelAttrs, bits: attrInt(bitsOf(w.format)), accuracy_level: attrInt(0) }, [['float32', [x.shape[0], N]]], undefined, CONTRIB_DOMAIN)[0]; // [M, N]
    return { outputs: [c ? op.add(y, c) : y] };
  });
  weightOfOutput.set(y, w);
  return y;
}

/** Each QuantizedLinear node's weight, by the node's output (the weight's lazily made parts are no node inputs). */
const weightOfOutput = new WeakMap<Tensor, QuantizedWeight>();

/** The weight a QuantizedLinear node multiplies by (for its VJP rule). */
export function quantizedWeightOf(n: Node): QuantizedWeight {
  const w = weightOfOutput.get(n.outputs[0]);
  if (!w) throw new Error(`QuantizedLinear: node with output ${n.outputs[0]} was not made by quantizedLinear()`);
  return w;
}
