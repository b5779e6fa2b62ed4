// Block quantization: NF4/int4/int8 round trips against the published levels and layouts, and the graphs over quantized projections.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { byteLevels, dequantize, NF4_LEVELS, quantize, type QuantFormat, type QuantizedTensor } from '../../../src/engine/models/quantize.ts';
import { embeddedWeights } from '../../../src/engine/models/weight-source.ts';
import { baseParameters } from '../../../src/engine/models/parameters.ts';
import { isQuantizedParameter, quantizeParameter } from '../../../src/engine/models/weight-cache.ts';
import { Graph, type Tensor, type TypedData } from '../../../src/engine/onnx/graph.ts';
import { gradients } from '../../../src/engine/onnx/autodiff.ts';
import { lmHeadCrossEntropy } from '../../../src/engine/onnx/fused.ts';
import * as op from '../../../src/engine/onnx/ops.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { batchFeeds, bucketOf } from '../../../src/engine/train/feeds.ts';
import { buildLogitsGraph, buildLossGraph, IO, loraSpecs } from '../../../src/engine/train/graphs.ts';
import { attentionBias } from '../../../src/engine/models/llama.ts';
import type { LoraConfig } from '../../../src/engine/lora/config.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { rng } from '../onnx/gradcheck.ts';
import { randomBatch, randomTensors, randomWeights, tinyConfig } from '../fixtures.ts';

// bitsandbytes' published NF4 table (bitsandbytes/functional.py, get_4bit_type('nf4')), copied here independently.
const PUBLISHED_NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

const randomMatrix = (n: number, seed: number) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * 0.5);
};

test('NF4: the published levels; every weight dequantizes to the nearest level × its block absmax; high nibble first', () => {
  assert.deepEqual([...NF4_LEVELS], PUBLISHED_NF4);
  const [N, K] = [3, 128];
  const w = randomMatrix(N * K, 1);
  w[5] = 0.75; // the largest magnitude of block 0: its absmax, so level +1 exactly
  const q = quantize(w, [N, K], 'nf4');
  assert.equal(q.codes.length, (N * K) / 2);
  assert.equal(q.scales.length, (N * K) / 64);
  assert.equal(q.scales[0], 0.75);
  const deq = dequantize(q);
  for (let i = 0; i < w.length; i++) {
    const absmax = q.scales[Math.floor(i / 64)];
    const nearest = PUBLISHED_NF4.reduce((best, l) => (Math.abs(w[i] / absmax - l) < Math.abs(w[i] / absmax - best) ? l : best));
    assert.equal(deq[i], Math.fround(nearest * absmax), `weight ${i}`);
    const code = i % 2 === 0 ? q.codes[i >> 1] >> 4 : q.codes[i >> 1] & 15;
    assert.equal(PUBLISHED_NF4[code], nearest, `code of weight ${i}`);
  }
  assert.equal(deq[5], 0.75);
});

test('int4/int8 (MatMulNBits layout): codes = round(w/scale) + zero point, low nibble first, the extreme of each block exact', () => {
  const [N, K] = [4, 64];
  for (const format of ['int4', 'int8'] as QuantFormat[]) {
    const bits = format === 'int4' ? 4 : 8;
    const w = randomMatrix(N * K, 2);
    const q = quantize(w, [N, K], format);
    assert.equal(q.codes.length, (N * K * bits) / 8);
    assert.equal(q.scales.length, (N * K) / 32);
    const deq = dequantize(q);
    for (let b = 0; b < q.scales.length; b++) {
      const block = [...w.subarray(b * 32, b * 32 + 32)];
      const extreme = block.reduce((m, x) => (Math.abs(x) > Math.abs(m) ? x : m));
      assert.equal(q.scales[b], Math.fround(extreme / -(1 << (bits - 1))), `${format} block ${b} scale`);
      for (let i = b * 32; i < b * 32 + 32; i++) {
        // Half a step, except a value of the other sign beyond the last positive level (2^(bits−1) − 1 steps): one step.
        const clamped = Math.abs(w[i] / q.scales[b]) > (1 << (bits - 1)) - 0.5;
        assert.ok(Math.abs(deq[i] - w[i]) <= Math.abs(q.scales[b]) * (clamped ? 1 : 0.5) + 1e-7, `${format} weight ${i}: ${deq[i]} vs ${w[i]}`);
        const code = bits === 8 ? q.codes[i] : i % 2 === 0 ? q.codes[i >> 1] & 15 : q.codes[i >> 1] >> 4;
        assert.equal(deq[i], Math.fround((code - (1 << (bits - 1))) * q.scales[b]), `${format} code of weight ${i}`);
        if (w[i] === extreme) assert.equal(deq[i], w[i]);
      }
    }
  }
  // The graph's gather table agrees with the reference on every byte value.
  assert.deepEqual([...byteLevels('int4').subarray(2 * 0x4b, 2 * 0x4b + 2)], [0xb - 8, 0x4 - 8]);
  assert.deepEqual([...byteLevels('nf4').subarray(2 * 0x4b, 2 * 0x4b + 2)], [NF4_LEVELS[4], NF4_LEVELS[11]]);
});

// Matrices wide enough for every format's blocks: D 64, F 128 (embedding, head, q/k/v/gate/up K = 64, o K = 64, down K = 128).
const configs = { untied: tinyConfig({ hidden_size: 64, intermediate_size: 128, vocab_size: 19 }), tied: tinyConfig({ hidden_size: 64, intermediate_size: 128, vocab_size: 19, tie_word_embeddings: true }) };
const lora: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };

/** The model's weights with every matrix quantized, and the same model over the dequantized matrices in fp32. */
function quantizedAndDequantized(config: ModelConfig, format: QuantFormat) {
  const fp32 = randomWeights(config, 5, 'float32');
  const quantized = new Map<string, { dims: number[]; data: TypedData } | QuantizedTensor>();
  const dequantized = new Map<string, { dims: number[]; data: TypedData }>();
  let count = 0;
  for (const spec of baseParameters(config)) {
    const w = fp32.get(spec.name)!;
    if (!isQuantizedParameter(spec, format)) {
      assert.equal(spec.dims.length, 1, `${spec.name} is a matrix: quantized`);
      quantized.set(spec.name, w);
      dequantized.set(spec.name, w);
      continue;
    }
    const q = quantizeParameter(spec, w.data as Float32Array, format);
    quantized.set(spec.name, q);
    dequantized.set(spec.name, { dims: spec.dims, data: dequantize(q) });
    count++;
  }
  assert.equal(count, config.numLayers * 7 + (config.tieWordEmbeddings ? 1 : 2), 'every projection, the embedding and an untied head are quantized');
  return { quantized: embeddedWeights(quantized), dequantized: embeddedWeights(dequantized) };
}

const maxRelative = (a: Float32Array, b: Float32Array) => {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
};

for (const [tying, config] of Object.entries(configs))
for (const format of ['nf4', 'int4', 'int8'] as QuantFormat[]) {
  test(`${format}, ${tying} head: the forward (quantized embedding rows, projections, head) equals an fp32 forward over the dequantized weights, and so do the LoRA gradients through it`, async () => {
    const { quantized, dequantized } = quantizedAndDequantized(config, format);
    const opts = { device: 'cpu' as const, threads: 1 };
    // Logits with an adapter (B ≠ 0, so the LoRA path is exercised too).
    const [B, T] = [2, 6];
    const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % config.vocabSize);
    const specs = loraSpecs(config, lora);
    const adapter = randomTensors(specs, 9, 0.2);
    const feeds: Record<string, ort.Tensor> = {
      [IO.inputIds]: new ort.Tensor('int32', ids, [B, T]),
      [IO.attentionBias]: new ort.Tensor('float32', attentionBias(B, T, new Float32Array(B * T).fill(1)), [B, 1, 1, T, T]),
    };
    for (const p of specs) feeds[p.name] = new ort.Tensor('float32', Float32Array.from(adapter.get(p.name)!), p.dims);
    const logits = async (w: typeof quantized) => {
      const s = await createSession(buildLogitsGraph(config, w, lora, B, T).serialize(), opts);
      const out = (await s.run(feeds)).logits.data as Float32Array;
      await s.close();
      return out;
    };
    const rel = maxRelative(await logits(quantized), await logits(dequantized));
    assert.ok(rel < 1e-5, `logits differ by ${rel} (relative to the largest)`);

    // One training micro-batch: every LoRA gradient through the quantized base equals the dequantized graph's.
    const batch = randomBatch(config.vocabSize, 8, [8, 6], 4);
    const bucket = bucketOf(batch);
    const grads = async (w: typeof quantized) => {
      const s = await createSession(buildLossGraph('grad', config, w, lora, bucket).serialize(), opts);
      const f = batchFeeds(batch, bucket, 'float32');
      for (const p of specs) f[p.name] = feeds[p.name];
      const out = await s.run(f);
      await s.close();
      return out;
    };
    const [gq, gd] = [await grads(quantized), await grads(dequantized)];
    assert.ok(maxRelative(gq[IO.lossSum].data as Float32Array, gd[IO.lossSum].data as Float32Array) < 1e-5);
    for (const p of specs) {
      const r = maxRelative(gq[IO.grad(p.name)].data as Float32Array, gd[IO.grad(p.name)].data as Float32Array);
      assert.ok(r < 1e-4, `${p.name}: gradient differs by ${r}`);
    }
  });
}

test('the in-graph dequantization (input gradients, training head) equals the reference dequantize() exactly: nf4 through MatMulBnb4 over a [N·K, 1] view, int4/int8 through the level table', async () => {
  const [N, K] = [96, 128];
  for (const format of ['nf4', 'int4', 'int8'] as const) {
    const q = quantize(randomMatrix(N * K, 12), [N, K], format);
    const g = new Graph('deq');
    const x = g.input('x', 'float32', [1, K]);
    const [w] = embeddedWeights(new Map([['w', q]]))(g).matrixBlocks('w', x, N);
    g.output(w, 'w');
    const s = await createSession(g.serialize(), { device: 'cpu', threads: 2 });
    const got = (await s.run({ x: new ort.Tensor('float32', new Float32Array(K), [1, K]) })).w.data as Float32Array;
    await s.close();
    assert.deepEqual(got, dequantize(q), format);
  }
});

test('nf4 head in blocks of rows (kernel scratch one block at a time): the logits of the whole quantized matrix, plus c', async () => {
  const [N, K, M, block] = [200, 64, 3, 64]; // 4 blocks, the last of 8 rows
  const q = quantize(randomMatrix(N * K, 7), [N, K], 'nf4');
  const x = randomMatrix(M * K, 8);
  const c = randomMatrix(M * N, 9);
  const g = new Graph('blocks');
  const xs = g.input('x', 'float32', [M, K]);
  const cs = g.input('c', 'float32', [M, N]);
  g.output(embeddedWeights(new Map([['w', q]]))(g).linear('w', xs, cs, block), 'y');
  assert.equal(g.nodes.filter((n) => n.op === 'QuantizedLinear').length, 4);
  const s = await createSession(g.serialize(), { device: 'cpu', threads: 1 });
  const y = (await s.run({ x: new ort.Tensor('float32', x, [M, K]), c: new ort.Tensor('float32', c, [M, N]) })).y.data as Float32Array;
  await s.close();
  const w = dequantize(q);
  const want = Float32Array.from({ length: M * N }, (_, i) => {
    const [m, n] = [Math.floor(i / N), i % N];
    let sum = c[i];
    for (let k = 0; k < K; k++) sum += x[m * K + k] * w[n * K + k];
    return sum;
  });
  assert.ok(maxRelative(y, want) < 1e-5, `blocked head differs by ${maxRelative(y, want)}`);
});

test('nf4 training head in row blocks, dequantized one after another: the loss and dh of the whole dequantized head', async () => {
  const [V, D, K, block] = [200, 64, 6, 64]; // 4 blocks, the last of 8 rows
  const q = quantize(randomMatrix(V * D, 10), [V, D], 'nf4');
  const h = new ort.Tensor('float32', randomMatrix(K * D, 11), [K, D]);
  const labels = new ort.Tensor('int64', BigInt64Array.from([0, 199, 64, 63, 128, 7], BigInt), [K]);
  const outputs = async (blocks: (g: Graph, h: Tensor) => Tensor[]) => {
    const g = new Graph('head');
    const hs = g.input('h', 'float32', [K, D]);
    const loss = op.reduceSum(lmHeadCrossEntropy(hs, blocks(g, hs), g.input('labels', 'int64', [K]), g.constant(new Array(K).fill(1), 'float32', [K]), 4).rowLoss, [0]);
    g.output(loss, 'loss');
    g.output(gradients(loss, [hs])[0], 'dh');
    const s = await createSession(g.serialize(), { device: 'cpu', threads: 1 });
    const out = await s.run({ h, labels });
    await s.close();
    return [out.loss.data, out.dh.data] as Float32Array[];
  };
  let count = 0;
  const [blockedLoss, blockedDh] = await outputs((g, hs) => {
    const blocks = embeddedWeights(new Map([['w', q]]))(g).matrixBlocks('w', hs, block);
    count = blocks.length;
    return blocks;
  });
  assert.equal(count, 4);
  const [loss, dh] = await outputs((g) => [g.initializer('w', 'float32', [V, D], dequantize(q))]);
  assert.ok(maxRelative(blockedLoss, loss) < 1e-5, `loss ${blockedLoss} vs ${loss}`);
  assert.ok(maxRelative(blockedDh, dh) < 1e-5, `dh differs by ${maxRelative(blockedDh, dh)}`);
});
