// ONNX ops (opset 18, default domain) as functions over Tensors, each inferring its output shape and throwing on mismatch.
import { attrFloat, attrInt, attrInts, attrString, type DType, type Dim, type Graph, type Shape, type Tensor } from './graph.ts';

const fail = (op: string, msg: string, ...ts: Tensor[]): never => {
  throw new Error(`${op}: ${msg} (${ts.map(String).join(', ')})`);
};

const normAxis = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);

function sameDim(a: Dim, b: Dim): boolean {
  return a === b;
}

/** Numpy broadcasting of two shapes; symbolic dims must match by name or meet a 1. `ts` name the operands in errors. */
export function broadcastShapes(op: string, sa: Shape, sb: Shape, ...ts: Tensor[]): Shape {
  const n = Math.max(sa.length, sb.length);
  const out: Shape = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - sa.length ? 1 : sa[i - (n - sa.length)];
    const db = i < n - sb.length ? 1 : sb[i - (n - sb.length)];
    if (sameDim(da, db) || db === 1) out.push(da);
    else if (da === 1) out.push(db);
    else if (typeof da === 'number' && typeof db === 'number') fail(op, `cannot broadcast [${sa}] with [${sb}]`, ...ts);
    else out.push(typeof da === 'number' ? da : db);
  }
  return out;
}

function sameDtype(op: string, ...ts: Tensor[]) {
  for (const t of ts) if (t.dtype !== ts[0].dtype) fail(op, 'dtype mismatch', ...ts);
}

function binary(op: string, a: Tensor, b: Tensor, outDtype?: DType): Tensor {
  sameDtype(op, a, b);
  return a.graph.emit(op, [a, b], {}, [[outDtype ?? a.dtype, broadcastShapes(op, a.shape, b.shape, a, b)]])[0];
}

function unary(op: string, x: Tensor, attrs = {}): Tensor {
  return x.graph.emit(op, [x], attrs, [[x.dtype, x.shape]])[0];
}

export const add = (a: Tensor, b: Tensor) => binary('Add', a, b);
export const sub = (a: Tensor, b: Tensor) => binary('Sub', a, b);
export const mul = (a: Tensor, b: Tensor) => binary('Mul', a, b);
export const div = (a: Tensor, b: Tensor) => binary('Div', a, b);
export const pow = (a: Tensor, b: Tensor) => binary('Pow', a, b);
export const max = (a: Tensor, b: Tensor) => binary('Max', a, b);
export const equal = (a: Tensor, b: Tensor) => binary('Equal', a, b, 'bool');
export const greater = (a: Tensor, b: Tensor) => binary('Greater', a, b, 'bool');
export const neg = (x: Tensor) => unary('Neg', x);
export const sqrt = (x: Tensor) => unary('Sqrt', x);
export const reciprocal = (x: Tensor) => unary('Reciprocal', x);
export const sigmoid = (x: Tensor) => unary('Sigmoid', x);
export const exp = (x: Tensor) => unary('Exp', x);
export const log = (x: Tensor) => unary('Log', x);
export const identity = (x: Tensor) => unary('Identity', x);
export const softmax = (x: Tensor, axis = -1) => unary('Softmax', x, { axis: attrInt(axis) });
export const logSoftmax = (x: Tensor, axis = -1) => unary('LogSoftmax', x, { axis: attrInt(axis) });

/** Multiplies by a scalar constant in x's dtype. */
export const scale = (x: Tensor, s: number) => mul(x, x.graph.scalar(s, x.dtype));

export function cast(x: Tensor, to: DType): Tensor {
  const code = { float32: 1, float64: 11, int32: 6, int64: 7, bool: 9, uint8: 2 }[to];
  return x.graph.emit('Cast', [x], { to: attrInt(code) }, [[to, x.shape]])[0];
}

export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  if (cond.dtype !== 'bool') fail('Where', 'condition must be bool', cond);
  sameDtype('Where', a, b);
  const shape = broadcastShapes('Where', cond.shape, broadcastShapes('Where', a.shape, b.shape, a, b), cond, a, b);
  return a.graph.emit('Where', [cond, a, b], {}, [[a.dtype, shape]])[0];
}

/** Batched MatMul with broadcasting over leading dims: [..., m, k] · [..., k, n] → [..., m, n]. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  sameDtype('MatMul', a, b);
  if (a.rank < 2 || b.rank < 2) fail('MatMul', 'operands must be at least 2-D', a, b);
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (!sameDim(k, k2) && typeof k === 'number' && typeof k2 === 'number') fail('MatMul', 'inner dims differ', a, b);
  const lead = broadcastShapes('MatMul', a.shape.slice(0, -2), b.shape.slice(0, -2), a, b);
  return a.graph.emit('MatMul', [a, b], {}, [[a.dtype, [...lead, m, n]]])[0];
}

export interface GemmOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
}

/** Y = alpha·op(A)·op(B) + beta·C, A and B 2-D, C broadcastable to [m, n]. */
export function gemm(a: Tensor, b: Tensor, c: Tensor | null = null, o: GemmOptions = {}): Tensor {
  sameDtype('Gemm', a, b, ...(c ? [c] : []));
  if (a.rank !== 2 || b.rank !== 2) fail('Gemm', 'operands must be 2-D', a, b);
  const [m, k] = o.transA ? [a.shape[1], a.shape[0]] : a.shape;
  const [k2, n] = o.transB ? [b.shape[1], b.shape[0]] : b.shape;
  if (!sameDim(k, k2) && typeof k === 'number' && typeof k2 === 'number') fail('Gemm', `inner dims differ (transA=${!!o.transA}, transB=${!!o.transB})`, a, b);
  const attrs = {
    ...(o.transA ? { transA: attrInt(1) } : {}),
    ...(o.transB ? { transB: attrInt(1) } : {}),
    ...(o.alpha !== undefined && o.alpha !== 1 ? { alpha: attrFloat(o.alpha) } : {}),
    ...(o.beta !== undefined && o.beta !== 1 ? { beta: attrFloat(o.beta) } : {}),
  };
  if (c) broadcastShapes('Gemm', c.shape, [m, n], a, b, c);
  return a.graph.emit('Gemm', c ? [a, b, c] : [a, b], attrs, [[a.dtype, [m, n]]])[0];
}

/** The runtime value of dim `axis` of `x` as an int64 [1] tensor. */
export function dimOf(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.rank);
  if (typeof x.shape[a] === 'number') return x.graph.int64s([x.shape[a] as number]);
  return x.graph.emit('Shape', [x], { start: attrInt(a), end: attrInt(a + 1) }, [['int64', [1]]])[0];
}

/**
 * Reshape to `dims` (ONNX semantics: 0 copies the input dim, -1 is inferred). A symbolic dim in
 * `dims` must be given as `[sourceTensor, axis]` so its runtime value can be read.
 */
export function reshape(x: Tensor, dims: (number | [Tensor, number])[]): Tensor {
  const g = x.graph;
  const shape: Shape = dims.map((d, i) => (Array.isArray(d) ? d[0].shape[normAxis(d[1], d[0].rank)] : d === 0 ? x.shape[i] : d));
  const neg = shape.indexOf(-1);
  if (neg >= 0) {
    const known = shape.filter((_, i) => i !== neg);
    if (x.shape.every((d) => typeof d === 'number') && known.every((d) => typeof d === 'number')) {
      const total = x.shape.reduce<number>((p, d) => p * (d as number), 1);
      const rest = known.reduce<number>((p, d) => p * (d as number), 1);
      if (total % rest !== 0) fail('Reshape', `cannot reshape to [${dims}]`, x);
      shape[neg] = total / rest;
    } else shape[neg] = `${x.name}_d${neg}`;
  } else if (x.shape.every((d) => typeof d === 'number') && shape.every((d) => typeof d === 'number')) {
    const a = x.shape.reduce<number>((p, d) => p * (d as number), 1);
    const b = shape.reduce<number>((p, d) => p * (d as number), 1);
    if (a !== b) fail('Reshape', `cannot reshape to [${shape}]`, x);
  }
  const dynamic = dims.some(Array.isArray);
  const target = dynamic
    ? concat(
        dims.map((d) => (Array.isArray(d) ? dimOf(d[0], d[1]) : g.int64s([d]))),
        0,
      )
    : g.int64s(dims as number[]);
  return g.emit('Reshape', [x, target], {}, [[x.dtype, shape]])[0];
}

/** Reshape to a fully known shape (used by autodiff to restore an input's shape). */
export function reshapeTo(x: Tensor, like: Tensor): Tensor {
  if (like.shape.every((d) => typeof d === 'number')) return reshape(x, like.shape as number[]);
  return reshape(
    x,
    like.shape.map((_, i) => [like, i] as [Tensor, number]),
  );
}

export function transpose(x: Tensor, perm: number[]): Tensor {
  if (perm.length !== x.rank) fail('Transpose', `perm [${perm}] has wrong rank`, x);
  return x.graph.emit('Transpose', [x], { perm: attrInts(perm) }, [[x.dtype, perm.map((p) => x.shape[p])]])[0];
}

export function unsqueeze(x: Tensor, axes: number[]): Tensor {
  const rank = x.rank + axes.length;
  const ax = axes.map((a) => normAxis(a, rank));
  const shape: Shape = [];
  let j = 0;
  for (let i = 0; i < rank; i++) shape.push(ax.includes(i) ? 1 : x.shape[j++]);
  return x.graph.emit('Unsqueeze', [x, x.graph.int64s(axes)], {}, [[x.dtype, shape]])[0];
}

export function squeeze(x: Tensor, axes: number[]): Tensor {
  const ax = axes.map((a) => normAxis(a, x.rank));
  for (const a of ax) if (x.shape[a] !== 1) fail('Squeeze', `axis ${a} is not 1`, x);
  return x.graph.emit('Squeeze', [x, x.graph.int64s(axes)], {}, [[x.dtype, x.shape.filter((_, i) => !ax.includes(i))]])[0];
}

/** Static slice along `axes` with step 1: [starts, ends) per axis (clamped like ONNX). */
export function slice(x: Tensor, starts: number[], ends: number[], axes: number[]): Tensor {
  const g = x.graph;
  const shape = [...x.shape];
  axes.forEach((a0, i) => {
    const a = normAxis(a0, x.rank);
    const d = x.shape[a];
    if (typeof d !== 'number') fail('Slice', `axis ${a} is symbolic`, x);
    const s = Math.min(Math.max(starts[i] < 0 ? starts[i] + (d as number) : starts[i], 0), d as number);
    const e = Math.min(Math.max(ends[i] < 0 ? ends[i] + (d as number) : ends[i], 0), d as number);
    shape[a] = Math.max(e - s, 0);
  });
  const begins = axes.map((a0, i) => {
    const d = x.shape[normAxis(a0, x.rank)] as number;
    return Math.min(Math.max(starts[i] < 0 ? starts[i] + d : starts[i], 0), d);
  });
  return g.emit('Slice', [x, g.int64s(starts), g.int64s(ends), g.int64s(axes)], {}, [[x.dtype, shape]], { begins, axes: axes.map((a) => normAxis(a, x.rank)) })[0];
}

export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error('Concat: no inputs');
  sameDtype('Concat', ...xs);
  const a = normAxis(axis, xs[0].rank);
  const shape = [...xs[0].shape];
  let total: Dim = 0;
  for (const x of xs) {
    if (x.rank !== xs[0].rank) fail('Concat', 'rank mismatch', ...xs);
    x.shape.forEach((d, i) => {
      if (i !== a && !sameDim(d, shape[i]) && typeof d === 'number' && typeof shape[i] === 'number') fail('Concat', `dim ${i} differs`, ...xs);
    });
    total = typeof total === 'number' && typeof x.shape[a] === 'number' ? total + (x.shape[a] as number) : `${total}+${x.shape[a]}`;
  }
  shape[a] = total;
  return xs[0].graph.emit('Concat', xs, { axis: attrInt(a) }, [[xs[0].dtype, shape]])[0];
}

export function split(x: Tensor, sizes: number[], axis: number): Tensor[] {
  const g = x.graph;
  const a = normAxis(axis, x.rank);
  if (sizes.reduce((p, s) => p + s, 0) !== x.shape[a]) fail('Split', `sizes [${sizes}] do not sum to dim ${a}`, x);
  return g.emit(
    'Split',
    [x, g.int64s(sizes)],
    { axis: attrInt(a) },
    sizes.map((s) => [x.dtype, x.shape.map((d, i) => (i === a ? s : d))]),
  );
}

/** Gather along `axis`: data[..., idx, ...] with idx of any shape. */
export function gather(data: Tensor, indices: Tensor, axis = 0): Tensor {
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') fail('Gather', 'indices must be int', indices);
  const a = normAxis(axis, data.rank);
  const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return data.graph.emit('Gather', [data, indices], { axis: attrInt(a) }, [[data.dtype, shape]])[0];
}

export function gatherElements(data: Tensor, indices: Tensor, axis: number): Tensor {
  return data.graph.emit('GatherElements', [data, indices], { axis: attrInt(normAxis(axis, data.rank)) }, [[data.dtype, indices.shape]])[0];
}

/** ScatterElements: a copy of data with updates written at indices along `axis` (indices and updates share a shape). */
export function scatterElements(data: Tensor, indices: Tensor, updates: Tensor, axis: number): Tensor {
  if (indices.shape.join(',') !== updates.shape.join(',')) fail('ScatterElements', 'indices and updates differ in shape', indices, updates);
  return data.graph.emit('ScatterElements', [data, indices, updates], { axis: attrInt(normAxis(axis, data.rank)) }, [[data.dtype, data.shape]])[0];
}

/** ScatterND with reduction 'add': data with updates summed in at indices [..., k]. */
export function scatterNDAdd(data: Tensor, indices: Tensor, updates: Tensor): Tensor {
  return data.graph.emit('ScatterND', [data, indices, updates], { reduction: attrString('add') }, [[data.dtype, data.shape]])[0];
}

function reduce(op: string, x: Tensor, axes: number[], keepdims: boolean): Tensor {
  const ax = axes.map((a) => normAxis(a, x.rank));
  const shape = keepdims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
  return x.graph.emit(op, [x, x.graph.int64s(ax)], { keepdims: attrInt(keepdims ? 1 : 0) }, [[x.dtype, shape]], { axes: ax })[0];
}

export const reduceSum = (x: Tensor, axes: number[], keepdims = false) => reduce('ReduceSum', x, axes, keepdims);
export const reduceMean = (x: Tensor, axes: number[], keepdims = false) => reduce('ReduceMean', x, axes, keepdims);
export const reduceMax = (x: Tensor, axes: number[], keepdims = false) => reduce('ReduceMax', x, axes, keepdims);

/** Expand to `shape` (static dims only). */
export function expand(x: Tensor, shape: number[]): Tensor {
  const g = x.graph;
  const out = broadcastShapes('Expand', x.shape, shape, x);
  return g.emit('Expand', [x, g.int64s(shape)], {}, [[x.dtype, out]])[0];
}

/** Zero padding: pads = [begin_0, …, begin_n, end_0, …, end_n]. */
export function pad(x: Tensor, pads: number[]): Tensor {
  const n = x.rank;
  const shape = x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i] + pads[i + n] : fail('Pad', 'symbolic dim', x)));
  return x.graph.emit('Pad', [x, x.graph.int64s(pads)], {}, [[x.dtype, shape as Shape]])[0];
}

/** Zeros of a static shape in dtype `dtype`. */
export function zeros(g: Graph, shape: number[], dtype: DType): Tensor {
  return expand(g.scalar(0, dtype), shape);
}
