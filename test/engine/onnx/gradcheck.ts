// Finite-difference gradient checker for float64 graphs: autodiff gradients vs central differences, run by onnxruntime.
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { gradients } from '../../../src/engine/onnx/autodiff.ts';
import { Graph, numel, type DType, type Tensor } from '../../../src/engine/onnx/graph.ts';
import * as op from '../../../src/engine/onnx/ops.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { createRng } from '../../../src/engine/random.ts';

export interface InputSpec {
  shape: number[];
  dtype?: DType;
  /** Fixed values (required for integer inputs); float inputs default to seeded uniform in [lo, hi). */
  data?: number[];
  lo?: number;
  hi?: number;
  /** false: no gradient requested for this float input. */
  grad?: boolean;
}

/** Uniform [0, 1) numbers from a seed. */
export function rng(seed: number): () => number {
  return createRng(seed).float;
}

function ortTensor(dtype: DType, data: number[], shape: number[]): ort.Tensor {
  if (dtype === 'float64') return new ort.Tensor('float64', Float64Array.from(data), shape);
  if (dtype === 'int64') return new ort.Tensor('int64', BigInt64Array.from(data.map(BigInt)), shape);
  if (dtype === 'int32') return new ort.Tensor('int32', Int32Array.from(data), shape);
  if (dtype === 'bool') return new ort.Tensor('bool', Uint8Array.from(data), shape);
  return new ort.Tensor('float32', Float32Array.from(data), shape);
}

/**
 * Builds `build(inputs)` in float64, takes loss = Σ y·R (R fixed random) and checks ∂loss/∂input
 * for every float input against central differences. Throws with the worst element on failure.
 */
export async function gradCheck(specs: Record<string, InputSpec>, build: (x: Record<string, Tensor>) => Tensor, opts: { seed?: number; eps?: number; tol?: number } = {}) {
  const rand = rng(opts.seed ?? 1);
  const g = new Graph('gradcheck', 'float64');
  const xs: Record<string, Tensor> = {};
  const values: Record<string, number[]> = {};
  for (const [name, s] of Object.entries(specs)) {
    const dtype = s.dtype ?? 'float64';
    xs[name] = g.input(name, dtype, s.shape);
    values[name] = s.data ?? Array.from({ length: numel(s.shape) }, () => (s.lo ?? -1) + ((s.hi ?? 1) - (s.lo ?? -1)) * rand());
  }
  const y = build(xs);
  const r = g.input('R', 'float64', y.shape);
  const rValues = Array.from({ length: numel(y.shape as number[]) }, () => rand() * 2 - 1);
  const loss = op.reduceSum(op.reshape(op.mul(y, r), [-1]), [0]);
  const wrtNames = Object.keys(specs).filter((k) => (specs[k].dtype ?? 'float64') === 'float64' && specs[k].grad !== false);
  const grads = gradients(
    loss,
    wrtNames.map((k) => xs[k]),
  );
  g.output(loss, 'loss');
  grads.forEach((d, i) => g.output(d, `grad_${wrtNames[i]}`));
  const session = await createSession(g.serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });
  const feeds = (vals: Record<string, number[]>) => {
    const f: Record<string, ort.Tensor> = { R: ortTensor('float64', rValues, y.shape as number[]) };
    for (const [name, s] of Object.entries(specs)) f[name] = ortTensor(s.dtype ?? 'float64', vals[name], s.shape);
    return f;
  };
  const base = await session.run(feeds(values));
  const eps = opts.eps ?? 1e-6;
  const tol = opts.tol ?? 1e-6;
  for (const name of wrtNames) {
    const analytic = base[`grad_${name}`].data as Float64Array;
    assert.equal(analytic.length, values[name].length, `grad_${name} has the input's size`);
    for (let i = 0; i < values[name].length; i++) {
      const at = (delta: number) => ({ ...values, [name]: values[name].map((v, j) => (j === i ? v + delta : v)) });
      const lp = ((await session.run(feeds(at(eps)))).loss.data as Float64Array)[0];
      const lm = ((await session.run(feeds(at(-eps)))).loss.data as Float64Array)[0];
      const numeric = (lp - lm) / (2 * eps);
      const err = Math.abs(numeric - analytic[i]) / Math.max(1, Math.abs(numeric));
      assert.ok(err < tol, `d loss/d ${name}[${i}]: autodiff ${analytic[i]} vs finite difference ${numeric} (err ${err})`);
    }
  }
  await session.close();
}
