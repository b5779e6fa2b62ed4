// The graph builder: shape inference (static and symbolic), errors that name the shapes, deterministic bytes, external data.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { cachedGraph } from '../../../src/engine/onnx/graph-cache.ts';
import { Graph } from '../../../src/engine/onnx/graph.ts';
import * as op from '../../../src/engine/onnx/ops.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';

test('shapes are inferred as the graph is built, symbolic dims included', () => {
  const g = new Graph('t');
  const x = g.input('x', 'float32', ['batch', 'seq', 8]);
  const w = g.input('w', 'float32', [16, 8]);
  const flat = op.reshape(x, [-1, 8]);
  const y = op.gemm(flat, w, null, { transB: true });
  assert.deepEqual(y.shape, ['x_d0', 16]);
  assert.deepEqual(op.reshape(y, [[x, 0], [x, 1], 4, 4]).shape, ['batch', 'seq', 4, 4]);
  assert.deepEqual(op.matmul(g.input('a', 'float32', [2, 1, 3, 4]), g.input('b', 'float32', [5, 4, 6])).shape, [2, 5, 3, 6]);
  assert.deepEqual(op.reduceMean(x, [-1], true).shape, ['batch', 'seq', 1]);
  assert.deepEqual(op.slice(g.input('s', 'float32', [10, 4]), [2], [-1], [0]).shape, [7, 4]);
});

test('mismatches throw with the shapes in the message', () => {
  const g = new Graph('t');
  const a = g.input('a', 'float32', [3, 4]);
  assert.throws(() => op.matmul(a, g.input('b', 'float32', [5, 2])), /MatMul: inner dims differ \(a:float32\[3,4\], b:float32\[5,2\]\)/);
  assert.throws(() => op.add(a, g.input('c', 'float32', [3, 5])), /Add: cannot broadcast \[3,4\] with \[3,5\] \(a:float32\[3,4\], c:float32\[3,5\]\)/);
  assert.throws(() => op.add(a, g.input('d', 'float64', [3, 4])), /dtype mismatch/);
  assert.throws(() => op.reshape(a, [5, -1]), /cannot reshape/);
});

function build(): Graph {
  const g = new Graph('det');
  const x = g.input('x', 'float32', [2, 3]);
  const w = g.initializer('w', 'float32', [3, 3], Float32Array.from({ length: 9 }, (_, i) => i));
  g.output(op.softmax(op.matmul(x, w)), 'y');
  return g;
}

test('serialization is deterministic; external initializers load from beside the model file', async () => {
  assert.deepEqual(build().serialize(), build().serialize());
  const dir = mkdtempSync(join(tmpdir(), 'localtune-graph-'));
  try {
    const data = new Float32Array(1024 + 4).fill(0);
    data.set([1, 2, 3, 4], 1024); // at byte offset 4096, as in the aligned weight cache
    writeFileSync(join(dir, 'weights.bin'), new Uint8Array(data.buffer));
    const path = cachedGraph(dir, 'ext', { v: 1 }, () => {
      const g = new Graph('ext');
      const x = g.input('x', 'float32', [4]);
      const w = g.externalInitializer('w', 'float32', [4], { location: 'weights.bin', offset: 4096, length: 16 });
      g.output(op.mul(x, w), 'y');
      return g;
    });
    assert.equal(cachedGraph(dir, 'ext', { v: 1 }, () => assert.fail('rebuilt a cached graph')), path);
    const s = await createSession(path, { device: 'cpu', threads: 1 });
    const y = (await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 1, 2, 2), [4]) })).y.data;
    assert.deepEqual(Array.from(y as Float32Array), [1, 2, 6, 8]);
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
