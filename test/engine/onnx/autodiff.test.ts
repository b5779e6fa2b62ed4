// Every VJP rule checked against float64 central differences, including broadcasting and the fused rules.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { gradients, VJP } from '../../../src/engine/onnx/autodiff.ts';
import { attention, rmsNorm, rotary, swiGlu, lmHeadCrossEntropy } from '../../../src/engine/onnx/fused.ts';
import { Graph } from '../../../src/engine/onnx/graph.ts';
import * as op from '../../../src/engine/onnx/ops.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { gradCheck } from './gradcheck.ts';

const pos = { lo: 0.5, hi: 2 };

test('Add, Sub, Mul, Div with broadcasting', async () => {
  await gradCheck({ a: { shape: [2, 3] }, b: { shape: [3] } }, ({ a, b }) => op.add(a, b));
  await gradCheck({ a: { shape: [2, 3] }, b: { shape: [2, 1] } }, ({ a, b }) => op.sub(a, b));
  await gradCheck({ a: { shape: [2, 1, 3] }, b: { shape: [4, 1] } }, ({ a, b }) => op.mul(a, b));
  await gradCheck({ a: { shape: [2, 3] }, b: { shape: [1, 3], ...pos } }, ({ a, b }) => op.div(a, b));
});

test('Pow, Neg, Sqrt, Reciprocal, Sigmoid, Exp, Log, Identity', async () => {
  await gradCheck({ a: { shape: [2, 3], ...pos }, p: { shape: [], lo: 1.5, hi: 2.5 } }, ({ a, p }) => op.pow(a, p));
  await gradCheck({ a: { shape: [5] } }, ({ a }) => op.neg(a));
  await gradCheck({ a: { shape: [5], ...pos } }, ({ a }) => op.sqrt(a));
  await gradCheck({ a: { shape: [5], ...pos } }, ({ a }) => op.reciprocal(a));
  await gradCheck({ a: { shape: [5], lo: -3, hi: 3 } }, ({ a }) => op.sigmoid(a));
  await gradCheck({ a: { shape: [5] } }, ({ a }) => op.exp(a));
  await gradCheck({ a: { shape: [5], ...pos } }, ({ a }) => op.log(a));
  await gradCheck({ a: { shape: [5] } }, ({ a }) => op.identity(a));
});

test('MatMul, batched and broadcast', async () => {
  await gradCheck({ a: { shape: [2, 3, 4] }, b: { shape: [4, 5] } }, ({ a, b }) => op.matmul(a, b));
  await gradCheck({ a: { shape: [2, 1, 3, 4] }, b: { shape: [3, 4, 2] } }, ({ a, b }) => op.matmul(a, b));
});

test('Gemm, all four transposes, alpha, beta and a broadcast C', async () => {
  for (const transA of [false, true])
    for (const transB of [false, true]) {
      const a = { shape: transA ? [4, 3] : [3, 4] };
      const b = { shape: transB ? [5, 4] : [4, 5] };
      await gradCheck({ a, b, c: { shape: [5] } }, (x) => op.gemm(x.a, x.b, x.c, { transA, transB, alpha: 0.7, beta: 1.3 }));
    }
  await gradCheck({ a: { shape: [3, 4] }, b: { shape: [5, 4] } }, ({ a, b }) => op.gemm(a, b, null, { transB: true }));
});

test('Reshape, Transpose, Unsqueeze, Squeeze, Expand', async () => {
  await gradCheck({ a: { shape: [2, 6] } }, ({ a }) => op.reshape(a, [3, -1, 2]));
  await gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => op.transpose(a, [2, 0, 1]));
  await gradCheck({ a: { shape: [2, 3] } }, ({ a }) => op.unsqueeze(a, [0, 2]));
  await gradCheck({ a: { shape: [2, 1, 3] } }, ({ a }) => op.squeeze(a, [1]));
  await gradCheck({ a: { shape: [3, 1] } }, ({ a }) => op.expand(a, [2, 3, 4]));
});

test('Slice, Concat, Split (one output unused)', async () => {
  await gradCheck({ a: { shape: [4, 5] } }, ({ a }) => op.slice(a, [1, -3], [3, 100], [0, 1]));
  await gradCheck({ a: { shape: [2, 3] }, b: { shape: [2, 2] } }, ({ a, b }) => op.concat([a, b], 1));
  await gradCheck({ a: { shape: [5, 2] } }, ({ a }) => op.split(a, [2, 3], 0)[1]);
});

test('Gather rows with repeated indices (embedding)', async () => {
  await gradCheck({ e: { shape: [4, 3] }, i: { shape: [2, 3], dtype: 'int64', data: [1, 3, 1, 0, 1, 2] } }, ({ e, i }) => op.gather(e, i, 0));
});

test('Softmax, LogSoftmax', async () => {
  await gradCheck({ a: { shape: [2, 5], lo: -2, hi: 2 } }, ({ a }) => op.softmax(a, -1));
  await gradCheck({ a: { shape: [2, 5], lo: -2, hi: 2 } }, ({ a }) => op.logSoftmax(a, 1));
});

test('ReduceSum, ReduceMean with and without keepdims', async () => {
  await gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => op.reduceSum(a, [1], true));
  await gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => op.reduceSum(a, [0, 2], false));
  await gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => op.reduceMean(a, [-1], true));
  await gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => op.reduceMean(a, [1], false));
});

test('Where, Cast', async () => {
  await gradCheck({ c: { shape: [2, 3], dtype: 'bool', data: [1, 0, 1, 0, 0, 1] }, a: { shape: [2, 3] }, b: { shape: [3] } }, ({ c, a, b }) => op.where(c, a, b));
  await gradCheck({ a: { shape: [4] } }, ({ a }) => op.cast(a, 'float64'));
});

test('fused RmsNorm (x and weight)', async () => {
  await gradCheck({ x: { shape: [3, 6] }, w: { shape: [6] } }, ({ x, w }) => rmsNorm(x, w, 1e-5));
});

test('fused SwiGlu', async () => {
  await gradCheck({ a: { shape: [3, 4], lo: -3, hi: 3 }, u: { shape: [3, 4] } }, ({ a, u }) => swiGlu(a, u));
});

test('fused Rotary (RoPE), with scaled tables as the q side uses', async () => {
  const angles = Array.from({ length: 2 * 3 * 4 }, (_, i) => 0.3 * i);
  await gradCheck(
    {
      x: { shape: [2, 3, 16] }, // B 2, T 3, 2 heads of 8
      cos: { shape: [2, 3, 4], grad: false, data: angles.map((a) => 0.5 * Math.cos(a)) },
      sin: { shape: [2, 3, 4], grad: false, data: angles.map((a) => 0.5 * Math.sin(a)) },
    },
    ({ x, cos, sin }) => rotary(x, cos, sin, 2),
  );
});

test("float32 Rotary runs ONNX's RotaryEmbedding and equals HF's rotate_half rotation", async () => {
  const [B, T, H, HD] = [2, 5, 3, 8];
  const g = new Graph('rotary', 'float32');
  const y = rotary(g.input('x', 'float32', [B, T, H * HD]), g.input('cos', 'float32', [B, T, HD / 2]), g.input('sin', 'float32', [B, T, HD / 2]), H);
  g.output(y, 'y');
  assert.ok(g.nodes.some((n) => n.body?.some((b) => b.op === 'RotaryEmbedding')));
  const x = Float32Array.from({ length: B * T * H * HD }, (_, i) => Math.sin(1.7 * i));
  const angle = (b: number, t: number, j: number) => (t + b) * 10000 ** (-(2 * j) / HD);
  const cos = Float32Array.from({ length: B * T * (HD / 2) }, (_, i) => Math.cos(angle(Math.floor(i / (T * HD / 2)), Math.floor(i / (HD / 2)) % T, i % (HD / 2))));
  const sin = Float32Array.from({ length: B * T * (HD / 2) }, (_, i) => Math.sin(angle(Math.floor(i / (T * HD / 2)), Math.floor(i / (HD / 2)) % T, i % (HD / 2))));
  const s = await createSession(g.serialize(), { device: 'cpu' });
  const out = (await s.run({ x: new ort.Tensor('float32', x, [B, T, H * HD]), cos: new ort.Tensor('float32', cos, [B, T, HD / 2]), sin: new ort.Tensor('float32', sin, [B, T, HD / 2]) })).y.data as Float32Array;
  await s.close();
  // HF: q·cos_full + rotate_half(q)·sin_full, cos_full = [c, c], rotate_half(q) = [−q2, q1].
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++)
        for (let d = 0; d < HD; d++) {
          const base = ((b * T + t) * H + h) * HD;
          const j = d % (HD / 2);
          const c = cos[(b * T + t) * (HD / 2) + j];
          const sn = sin[(b * T + t) * (HD / 2) + j];
          const rotated = d < HD / 2 ? -x[base + d + HD / 2] : x[base + d - HD / 2];
          const want = x[base + d] * c + rotated * sn;
          assert.ok(Math.abs(out[base + d] - want) < 1e-5, `[${b}, ${t}, ${h}, ${d}]: ${out[base + d]} vs ${want}`);
        }
});

test('fused Attention: grouped queries, a masking bias, q, kᵀ and v', async () => {
  // B 2, H 2 kv heads, G 2 queries per kv head × Q 3 positions folded to M 6, S 5 keys, HD 4; the bias hides some keys.
  const bias = Array.from({ length: 2 * 2 * 2 * 3 * 5 }, (_, i) => (i % 7 === 3 ? -1e9 : (i % 5) * 0.1));
  await gradCheck(
    { q: { shape: [2, 2, 6, 4] }, kt: { shape: [2, 2, 4, 5] }, v: { shape: [2, 2, 5, 4] }, bias: { shape: [2, 2, 2, 3, 5], grad: false, data: bias } },
    ({ q, kt, v, bias }) => attention(q, kt, v, bias, [2, 2, 2, 3, 5]),
  );
});

test('fused LM head cross-entropy, chunked, with weights: per-row losses under different upstream gradients', async () => {
  await gradCheck(
    {
      h: { shape: [5, 3] },
      w: { shape: [7, 3], grad: false },
      labels: { shape: [5], dtype: 'int64', data: [0, 6, 3, 3, 1] },
      weights: { shape: [5], grad: false, data: [1, 0, 1, 0.5, 1] },
    },
    ({ h, w, labels, weights }) => lmHeadCrossEntropy(h, w, labels, weights, 2).rowLoss,
  );
});

test('fused LM head cross-entropy over a head in row blocks (as a quantized head is dequantized): the same per-row losses and gradient', async () => {
  await gradCheck(
    {
      h: { shape: [5, 3] },
      w1: { shape: [4, 3], grad: false },
      w2: { shape: [3, 3], grad: false },
      labels: { shape: [5], dtype: 'int64', data: [0, 6, 3, 3, 5] },
      weights: { shape: [5], grad: false, data: [1, 0, 1, 0.5, 1] },
    },
    ({ h, w1, w2, labels, weights }) => lmHeadCrossEntropy(h, [w1, w2], labels, weights, 2).rowLoss,
  );
});

test('an op without a rule throws by name; the frozen path gets no gradient', () => {
  const g = new Graph('t', 'float64');
  const a = g.input('a', 'float64', [3]);
  const frozen = g.input('frozen', 'float64', [3]);
  const y = op.reduceSum(op.max(a, frozen), [0]);
  assert.throws(() => gradients(y, [a]), /no VJP rule for op Max/);
  const z = op.reduceSum(op.mul(a, frozen), [0]);
  const before = g.nodes.length;
  gradients(z, [a]);
  const emitted = g.nodes.slice(before);
  // d/d frozen = g·a would be a Mul reading `a`; only d/da = g·frozen may be formed.
  assert.ok(emitted.some((n) => n.op === 'Mul' && n.inputs.includes(frozen)));
  assert.ok(!emitted.some((n) => n.inputs.includes(a)), 'no gradient formed for the frozen input');
  assert.ok('MatMul' in VJP && 'Gemm' in VJP && 'RmsNorm' in VJP);
});
