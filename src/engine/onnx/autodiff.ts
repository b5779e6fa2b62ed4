// Reverse-mode autodiff over a Graph: one vector-Jacobian rule per op, emitted as more graph nodes.
import { isFloat, type Node, type Tensor } from './graph.ts';
import { rotary } from './fused.ts';
import { dequantized, quantizedWeightOf } from './quantized.ts';
import * as op from './ops.ts';

/**
 * A VJP rule: given the node and the gradients of its outputs (null where none flows), return one
 * gradient per input (null where the input needs none; `needs[i]` says which are wanted).
 */
export type VjpRule = (node: Node, grads: (Tensor | null)[], needs: boolean[]) => (Tensor | null)[];

/** Sums a broadcast gradient `g` back down to the shape of `x`. */
export function sumToShape(g: Tensor, x: Tensor): Tensor {
  if (g.rank === x.rank && g.shape.every((d, i) => d === x.shape[i])) return g;
  const lead = g.rank - x.rank;
  let out = g;
  if (lead > 0)
    out = op.reduceSum(
      out,
      Array.from({ length: lead }, (_, i) => i),
      false,
    );
  const axes = x.shape.flatMap((d, i) => (d === 1 && out.shape[i] !== 1 ? [i] : []));
  if (axes.length) out = op.reduceSum(out, axes, true);
  return out;
}

/** Broadcasts `g` (the keepdims-reduced gradient) up to x's shape. */
function expandTo(g: Tensor, x: Tensor): Tensor {
  if (x.shape.every((d) => typeof d === 'number')) return op.expand(g, x.shape as number[]);
  return x.graph.emit('Expand', [g, x.graph.emit('Shape', [x], {}, [['int64', [x.rank]]])[0]], {}, [[g.dtype, x.shape]])[0];
}

const lastTwo = (t: Tensor) => op.transpose(t, [...Array.from({ length: t.rank - 2 }, (_, i) => i), t.rank - 1, t.rank - 2]);
const attr = (n: Node, name: string, dflt: number) => (n.attrs[name] ? (n.attrs[name].value as number) : dflt);
const scalarLike = (t: Tensor, v: number) => t.graph.scalar(v, t.dtype);
const one = (rule: (n: Node, g: Tensor, needs: boolean[]) => (Tensor | null)[]): VjpRule => (n, gs, needs) => (gs[0] ? rule(n, gs[0], needs) : n.inputs.map(() => null));

function reduceVjp(n: Node, g: Tensor, mean: boolean): Tensor {
  const x = n.inputs[0]!;
  const axes = n.meta!.axes as number[];
  const keep = attr(n, 'keepdims', 1) === 1;
  let gk = keep ? g : op.unsqueeze(g, axes); // keepdims shape
  if (mean) {
    const count = axes.reduce((p, a) => p * (x.shape[a] as number), 1);
    gk = op.scale(gk, 1 / count);
  }
  return expandTo(gk, x);
}

/** The one table: every differentiable op's VJP, with its math above it. */
export const VJP: Record<string, VjpRule> = {
  // y = a + b: da = Σ_bcast g, db = Σ_bcast g
  Add: one((n, g, needs) => [needs[0] ? sumToShape(g, n.inputs[0]!) : null, needs[1] ? sumToShape(g, n.inputs[1]!) : null]),
  // y = a − b: da = g, db = −g
  Sub: one((n, g, needs) => [needs[0] ? sumToShape(g, n.inputs[0]!) : null, needs[1] ? sumToShape(op.neg(g), n.inputs[1]!) : null]),
  // y = a·b: da = g·b, db = g·a
  Mul: one((n, g, needs) => {
    const [a, b] = n.inputs as Tensor[];
    return [needs[0] ? sumToShape(op.mul(g, b), a) : null, needs[1] ? sumToShape(op.mul(g, a), b) : null];
  }),
  // y = a/b: da = g/b, db = −g·y/b
  Div: one((n, g, needs) => {
    const [a, b] = n.inputs as Tensor[];
    const y = n.outputs[0];
    return [needs[0] ? sumToShape(op.div(g, b), a) : null, needs[1] ? sumToShape(op.neg(op.div(op.mul(g, y), b)), b) : null];
  }),
  // y = a^p: da = g·p·a^(p−1), dp = g·y·ln a
  Pow: one((n, g, needs) => {
    const [a, p] = n.inputs as Tensor[];
    const y = n.outputs[0];
    return [
      needs[0] ? sumToShape(op.mul(op.mul(g, p), op.pow(a, op.sub(p, scalarLike(p, 1)))), a) : null,
      needs[1] ? sumToShape(op.mul(op.mul(g, y), op.log(a)), p) : null,
    ];
  }),
  // y = −x: dx = −g
  Neg: one((_n, g) => [op.neg(g)]),
  // y = x: dx = g
  Identity: one((_n, g) => [g]),
  // y = √x: dx = g/(2y)
  Sqrt: one((n, g) => [op.div(op.scale(g, 0.5), n.outputs[0])]),
  // y = 1/x: dx = −g·y²
  Reciprocal: one((n, g) => [op.neg(op.mul(g, op.mul(n.outputs[0], n.outputs[0])))]),
  // y = σ(x): dx = g·y·(1 − y)
  Sigmoid: one((n, g) => {
    const y = n.outputs[0];
    return [op.mul(op.mul(g, y), op.sub(scalarLike(y, 1), y))];
  }),
  // y = eˣ: dx = g·y
  Exp: one((n, g) => [op.mul(g, n.outputs[0])]),
  // y = ln x: dx = g/x
  Log: one((n, g) => [op.div(g, n.inputs[0]!)]),
  // Y = A·B (batched, broadcast): dA = Σ_bcast g·Bᵀ, dB = Σ_bcast Aᵀ·g
  MatMul: one((n, g, needs) => {
    const [a, b] = n.inputs as Tensor[];
    return [needs[0] ? sumToShape(op.matmul(g, lastTwo(b)), a) : null, needs[1] ? sumToShape(op.matmul(lastTwo(a), g), b) : null];
  }),
  // Y = α·op(A)·op(B) + β·C; with G = g:
  //   A·B:   dA = α·G·Bᵀ   dB = α·Aᵀ·G
  //   A·Bᵀ:  dA = α·G·B    dB = α·Gᵀ·A
  //   Aᵀ·B:  dA = α·B·Gᵀ   dB = α·A·G
  //   Aᵀ·Bᵀ: dA = α·Bᵀ·Gᵀ  dB = α·Gᵀ·Aᵀ
  //   dC = β·Σ_bcast G
  Gemm: one((n, g, needs) => {
    const [a, b, c] = n.inputs;
    const tA = attr(n, 'transA', 0) === 1;
    const tB = attr(n, 'transB', 0) === 1;
    const alpha = attr(n, 'alpha', 1);
    const beta = attr(n, 'beta', 1);
    // dB first: dA (usually an activation's gradient) emitted last can take another consumer's gradient as its C (see accumulate).
    let dA: Tensor | null = null;
    let dB: Tensor | null = null;
    if (needs[1]) {
      if (!tB) dB = op.gemm(a!, g, null, { transA: !tA, alpha });
      else dB = op.gemm(g, a!, null, { transA: true, transB: tA, alpha });
    }
    if (needs[0]) {
      if (!tA) dA = op.gemm(g, b!, null, { transB: !tB, alpha });
      else dA = op.gemm(b!, g, null, { transA: tB, transB: true, alpha });
    }
    const dC = c && needs[2] ? (beta === 1 ? sumToShape(g, c) : op.scale(sumToShape(g, c), beta)) : null;
    return c ? [dA, dB, dC] : [dA, dB];
  }),
  // Shape-only ops: dx = g in x's shape
  Reshape: one((n, g) => [op.reshapeTo(g, n.inputs[0]!), null]),
  Unsqueeze: one((n, g) => [op.reshapeTo(g, n.inputs[0]!), null]),
  Squeeze: one((n, g) => [op.reshapeTo(g, n.inputs[0]!), null]),
  // y = xᵖᵉʳᵐ: dx = gᵖᵉʳᵐ⁻¹
  Transpose: one((n, g) => {
    const perm = n.attrs.perm.value as number[];
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [op.transpose(g, inv)];
  }),
  // y = x[begin:end] (step 1): dx = g zero-padded back to x's shape
  Slice: one((n, g) => {
    const x = n.inputs[0]!;
    const begins = n.meta!.begins as number[];
    const axes = n.meta!.axes as number[];
    const pads = new Array<number>(2 * x.rank).fill(0);
    axes.forEach((a, i) => {
      pads[a] = begins[i];
      pads[a + x.rank] = (x.shape[a] as number) - begins[i] - (g.shape[a] as number);
    });
    return [op.pad(g, pads), null, null, null];
  }),
  // y = concat(xᵢ): dxᵢ = split(g)ᵢ
  Concat: one((n, g) => {
    const axis = n.attrs.axis.value as number;
    return op.split(
      g,
      n.inputs.map((x) => x!.shape[axis] as number),
      axis,
    );
  }),
  // yᵢ = split(x)ᵢ: dx = concat(gᵢ), zeros for outputs without gradient
  Split: (n, gs) => {
    const axis = n.attrs.axis.value as number;
    const parts = n.outputs.map((y, i) => gs[i] ?? op.zeros(y.graph, y.shape as number[], y.dtype));
    return [op.concat(parts, axis), null];
  },
  // y = data[idx] (axis 0): ddata = scatter-add of g into zeros at idx
  Gather: one((n, g) => {
    const [data, idx] = n.inputs as Tensor[];
    if (attr(n, 'axis', 0) !== 0) throw new Error(`Gather VJP: only axis 0 (${data}, ${idx})`);
    const idx64 = idx.dtype === 'int64' ? idx : op.cast(idx, 'int64');
    const zeros = op.zeros(data.graph, data.shape as number[], data.dtype); // data's shape
    return [op.scatterNDAdd(zeros, op.unsqueeze(idx64, [-1]), g), null];
  }),
  // y = softmax(x): dx = y·(g − Σ g·y)
  Softmax: one((n, g) => {
    const y = n.outputs[0];
    const axis = attr(n, 'axis', -1);
    return [op.mul(y, op.sub(g, op.reduceSum(op.mul(g, y), [axis], true)))];
  }),
  // y = log softmax(x): dx = g − eʸ·Σ g
  LogSoftmax: one((n, g) => {
    const y = n.outputs[0];
    const axis = attr(n, 'axis', -1);
    return [op.sub(g, op.mul(op.exp(y), op.reduceSum(g, [axis], true)))];
  }),
  // y = Σ_axes x: dx = g broadcast back
  ReduceSum: one((n, g) => [reduceVjp(n, g, false), null]),
  // y = mean_axes x: dx = g broadcast back / count
  ReduceMean: one((n, g) => [reduceVjp(n, g, true), null]),
  // y = c ? a : b: da = c ? g : 0, db = c ? 0 : g
  Where: one((n, g, needs) => {
    const [c, a, b] = n.inputs as Tensor[];
    const zero = scalarLike(g, 0);
    return [null, needs[1] ? sumToShape(op.where(c, g, zero), a) : null, needs[2] ? sumToShape(op.where(c, zero, g), b) : null];
  }),
  // y = cast(x): dx = cast(g) back to x's dtype
  Cast: one((n, g) => [isFloat(n.inputs[0]!.dtype) ? op.cast(g, n.inputs[0]!.dtype) : null]),
  // y = expand(x): dx = Σ_bcast g
  Expand: one((n, g) => [sumToShape(g, n.inputs[0]!), null]),
  // Fused RMSNorm y = xh·w, xh = x·r, r = (mean x² + eps)^−½; u = g·w:
  //   dx = r·(u − xh·mean(u·xh)),  dw = Σ_rows g·xh
  RmsNorm: one((n, g, needs) => {
    const [, w] = n.inputs as Tensor[];
    const { r, xh } = n.saved!;
    let dx: Tensor | null = null;
    if (needs[0]) {
      const u = op.mul(g, w); // [N, D]
      dx = op.mul(r, op.sub(u, op.mul(xh, op.reduceMean(op.mul(u, xh), [-1], true)))); // [N, D]
    }
    return [dx, needs[1] ? op.reduceSum(op.mul(g, xh), [0], false) : null];
  }),
  // Fused SwiGLU h = silu(a)·u, s = σ(a), silu = a·s:
  //   du = g·silu,  da = g·u·(s + silu·(1 − s))
  SwiGlu: one((n, g, needs) => {
    const [, up] = n.inputs as Tensor[];
    const { s, silu } = n.saved!;
    const dGate = needs[0] ? op.mul(op.mul(g, up), op.add(s, op.sub(silu, op.mul(silu, s)))) : null;
    return [dGate, needs[1] ? op.mul(g, silu) : null];
  }),
  // Fused RoPE, a rotation by θ (tables c = cos θ, s = sin θ, maybe scaled alike): its transpose rotates by −θ,
  //   dx = rotary(g, c, −s)
  Rotary: one((n, g, needs) => {
    if (needs[1] || needs[2]) throw new Error('Rotary: no gradient for the rotation tables');
    const [, cos, sin] = n.inputs as Tensor[];
    return [rotary(g, cos, op.neg(sin), n.attrs.num_heads.value as number), null, null];
  }),
  // Fused attention o = P·v, P = softmax(q·kᵀ + bias); with G = g:
  //   dv = Pᵀ·G,  dS = P·(G·vᵀ − rowsum(G·o)),  dq = dS·k,  dkᵀ = qᵀ·dS
  // (rowsum(G·o) equals Σ_s P·(G·vᵀ), the softmax VJP's sum, from [M, HD] instead of [M, S] elements)
  Attention: one((n, g, needs) => {
    const [q, kt, v] = n.inputs as Tensor[];
    const { probs } = n.saved!;
    const dS = needs[0] || needs[1] ? op.mul(probs, op.sub(op.matmul(g, lastTwo(v)), op.reduceSum(op.mul(g, n.outputs[0]), [-1], true))) : null; // [B, H, M, S]
    return [needs[0] ? op.matmul(dS!, lastTwo(kt)) : null, needs[1] ? op.matmul(lastTwo(q), dS!) : null, needs[2] ? op.matmul(lastTwo(probs), g) : null, null];
  }),
  // Fused y = x·deq(W)ᵀ + c over a frozen quantized W: dx = g·deq(W) (dequantized in the graph once g exists, transient
  // per layer: the exact input gradient of the forward's weight), dc = g
  QuantizedLinear: one((n, g, needs) => {
    if (needs[2]) throw new Error('QuantizedLinear: no gradient for the quantized weight (it is frozen)');
    const c = n.inputs[3];
    const dc = c && needs[3] ? sumToShape(g, c) : null;
    const dx = needs[0] ? op.gemm(g, dequantized(quantizedWeightOf(n), g)) : null; // [M, K] emitted last (see accumulate)
    return [dx, null, null, ...(c ? [dc] : [])];
  }),
  // Fused LM head + CE per row (inputs h, labels, weights, head blocks): dh[n] = g[n]·(saved ∂rowLoss_n/∂h_n); the head is frozen
  LmHeadCrossEntropy: (n, gs, needs) => {
    if (needs.slice(3).some(Boolean)) throw new Error('LmHeadCrossEntropy: no gradient for the head weight (it is frozen)');
    if (gs[1]) throw new Error('LmHeadCrossEntropy: the correct-count output is not differentiable');
    const dh = gs[0] && needs[0] ? op.mul(n.saved!.dh, op.unsqueeze(gs[0], [1])) : null; // [N, D]
    return n.inputs.map((_, i) => (i === 0 ? dh : null));
  },
};

/**
 * prev + d. When d is the fresh output of a Gemm without a C input (the usual dX = g·W of a
 * projection), prev becomes that Gemm's C instead: one pass over [N, in] fewer per extra consumer.
 */
function accumulate(prev: Tensor, d: Tensor): Tensor {
  const nodes = d.graph.nodes;
  const last = nodes[nodes.length - 1];
  const sameShape = prev.rank === d.rank && prev.shape.every((x, i) => x === d.shape[i]);
  if (last && last.op === 'Gemm' && last.outputs[0] === d && last.inputs.length === 2 && !last.attrs.beta && sameShape) {
    last.inputs.push(prev);
    return d;
  }
  return op.add(prev, d);
}

/**
 * Gradients of the scalar (or seeded) `root` with respect to each of `wrt`. Only nodes on a path
 * from some `wrt` to `root` are visited; everything else (the frozen base's own weights) gets none.
 */
export function gradients(root: Tensor, wrt: Tensor[], seed?: Tensor): Tensor[] {
  const g = root.graph;
  const nodes = g.nodes.slice();
  const requires = new Set(wrt.map((t) => t.name));
  for (const n of nodes) {
    if (n.inputs.some((t) => t && requires.has(t.name))) for (const o of n.outputs) if (isFloat(o.dtype)) requires.add(o.name);
  }
  if (!requires.has(root.name)) throw new Error(`gradients: ${root} does not depend on ${wrt.map(String).join(', ')}`);
  const grads = new Map<string, Tensor>();
  grads.set(root.name, seed ?? g.constant([1], root.dtype, root.shape.map(() => 1)));
  if (!seed && root.rank > 0) throw new Error(`gradients: root ${root} is not a scalar; pass a seed`);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    const outGrads = n.outputs.map((o) => grads.get(o.name) ?? null);
    if (outGrads.every((x) => x === null)) continue;
    const needs = n.inputs.map((t) => !!t && isFloat(t.dtype) && requires.has(t.name));
    if (!needs.some(Boolean)) continue;
    const rule = VJP[n.op];
    if (!rule) throw new Error(`no VJP rule for op ${n.op}`);
    const inGrads = rule(n, outGrads, needs);
    n.inputs.forEach((t, k) => {
      const d = inGrads[k];
      if (!t || !needs[k] || !d) return;
      const prev = grads.get(t.name);
      grads.set(t.name, prev ? accumulate(prev, d) : d);
    });
  }
  return wrt.map((t) => grads.get(t.name) ?? op.zeros(g, t.shape as number[], t.dtype));
}
