// DPO on tiny models: the loss graph's gradient against finite differences (float64), its values against a direct JS
// computation from per-sequence log-probabilities, and the trainer's reference log-probabilities and learning.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { attentionBias } from '../../../src/engine/models/llama.ts';
import { embeddedWeights, type WeightFactory } from '../../../src/engine/models/weight-source.ts';
import type { Graph } from '../../../src/engine/onnx/graph.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import type { PreferenceBatch, TrainBatch } from '../../../src/engine/train/batch.ts';
import { createDpoTrainer } from '../../../src/engine/train/dpo-trainer.ts';
import { batchFeeds, bucketOf } from '../../../src/engine/train/feeds.ts';
import { buildDpoGraph, buildLogitsGraph, IO, loraSpecs } from '../../../src/engine/train/graphs.ts';
import type { LoraConfig } from '../../../src/engine/lora/config.ts';
import type { AdapterTensors } from '../../../src/engine/lora/init.ts';
import { randomBatch, randomTensors, randomWeights, TINY_CONFIG_JSON, tinyConfig, writeTinyModelDir } from '../fixtures.ts';

const lora: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
const f64 = (data: Float64Array, dims: number[]) => new ort.Tensor('float64', data, dims);
const session = (g: Graph) => createSession(g.serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });

/** Two pairs (rows 0/1 and 2/3), of different lengths, the second half of each row weighted. */
const pairsBatch = (vocab: number, seed: number): TrainBatch => randomBatch(vocab, 8, [8, 5, 6, 8], seed);

/** The DPO graph's feeds; `rpoAlpha` only for the grad graph, the one that optimises it. */
function dpoFeeds(config: ModelConfig, batch: TrainBatch, adapter: Map<string, Float64Array>, reference: number[], beta: number, rpoAlpha?: number) {
  const bucket = bucketOf(batch);
  const f = batchFeeds(batch, bucket, 'float64');
  for (const p of loraSpecs(config, lora)) f[p.name] = f64(adapter.get(p.name)!, p.dims);
  f[IO.referenceLogps] = f64(Float64Array.from(reference), [batch.rows]);
  f[IO.beta] = f64(Float64Array.of(beta), []);
  if (rpoAlpha !== undefined) f[IO.rpoAlpha] = f64(Float64Array.of(rpoAlpha), []);
  return f;
}

test('DPO + RPO objective (loss_sum + α·preferred_nll_sum): LoRA gradients match finite differences on a tiny float64 model (every tensor)', async () => {
  const config = tinyConfig();
  const weights = embeddedWeights(randomWeights(config, 7));
  const batch = pairsBatch(config.vocabSize, 3);
  const s = await session(buildDpoGraph('grad', config, weights, lora, bucketOf(batch), { dtype: 'float64' }));
  const specs = loraSpecs(config, lora);
  const values = randomTensors(specs, 11, 0.3);
  const reference = [-9.5, -7.25, -8, -11];
  const beta = 0.7;
  const alpha = 0.6;
  const base = await s.run(dpoFeeds(config, batch, values, reference, beta, alpha));
  const objective = async (adapter: Map<string, Float64Array>) => {
    const out = await s.run(dpoFeeds(config, batch, adapter, reference, beta, alpha));
    return (out[IO.lossSum].data as Float64Array)[0] + alpha * (out[IO.preferredNllSum].data as Float64Array)[0];
  };
  const eps = 1e-6;
  for (const [i, p] of specs.entries()) {
    const analytic = base[IO.grad(p.name)].data as Float64Array;
    for (const j of [0, (i * 5) % analytic.length, analytic.length - 1]) {
      const at = (d: number) => new Map([...values].map(([k, v]) => [k, k === p.name ? v.map((x, q) => (q === j ? x + d : x)) : v]));
      const lp = await objective(at(eps));
      const lm = await objective(at(-eps));
      const numeric = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(numeric - analytic[j]) < 1e-6 * Math.max(1, Math.abs(numeric)), `${p.name}[${j}]: autodiff ${analytic[j]} vs FD ${numeric}`);
    }
  }
  await s.close();
});

/** Σ over each row's weighted predictions of log softmax(logits)[label], from the full logits, in JS. */
async function sequenceLogpsInJs(config: ModelConfig, weights: WeightFactory, batch: TrainBatch, adapter: Map<string, Float64Array>): Promise<number[]> {
  const { rows: B, seqLen: T } = batch;
  const V = config.vocabSize;
  const s = await session(buildLogitsGraph(config, weights, lora, B, T, { dtype: 'float64' }));
  const feeds: Record<string, ort.Tensor> = {
    [IO.inputIds]: new ort.Tensor('int32', batch.inputIds, [B, T]),
    [IO.attentionBias]: f64(Float64Array.from(attentionBias(B, T, batch.attentionMask)), [B, 1, 1, T, T]),
  };
  for (const p of loraSpecs(config, lora)) feeds[p.name] = f64(adapter.get(p.name)!, p.dims);
  const logits = (await s.run(feeds)).logits.data as Float64Array;
  await s.close();
  return Array.from({ length: B }, (_, b) => {
    let sum = 0;
    for (let t = 0; t < T; t++) {
      const w = batch.lossWeights[b * T + t];
      if (w === 0) continue;
      const row = logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
      const max = Math.max(...row);
      const logZ = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      sum += w * (row[batch.labels[b * T + t]] - logZ);
    }
    return sum;
  });
}

test('DPO loss, reward accuracy and margin equal a direct computation from per-sequence log-probabilities', async () => {
  const config = tinyConfig();
  const weights = embeddedWeights(randomWeights(config, 7));
  const batch = pairsBatch(config.vocabSize, 5);
  const adapter = randomTensors(loraSpecs(config, lora), 13, 0.4);
  const logps = await sequenceLogpsInJs(config, weights, batch, adapter);
  // References chosen so that one pair's margin is positive and the other's negative.
  const reference = [logps[0] - 2, logps[1] + 1, logps[2] + 3, logps[3] - 0.5];
  const beta = 0.3;
  const s = await session(buildDpoGraph('eval', config, weights, lora, bucketOf(batch), { dtype: 'float64' }));
  const out = await s.run(dpoFeeds(config, batch, adapter, reference, beta));
  await s.close();
  const got = (name: string) => (out[name].data as Float64Array)[0];
  const seq = out[IO.sequenceLogps].data as Float64Array;
  logps.forEach((v, b) => assert.ok(Math.abs(seq[b] - v) < 1e-10, `sequence ${b}: graph ${seq[b]} vs JS ${v}`));
  const z = [0, 1].map((p) => beta * (logps[2 * p] - reference[2 * p] - (logps[2 * p + 1] - reference[2 * p + 1])));
  assert.ok(z[0] > 0 && z[1] < 0, `margins ${z}`);
  const loss = z.reduce((a, x) => a - Math.log(1 / (1 + Math.exp(-x))), 0);
  assert.ok(Math.abs(got(IO.lossSum) - loss) < 1e-10, `loss ${got(IO.lossSum)} vs ${loss}`);
  assert.equal(got(IO.rewardCorrectSum), 1);
  assert.ok(Math.abs(got(IO.rewardMarginSum) - (z[0] + z[1])) < 1e-10);
  // RPO's term: each preferred output's mean per-token NLL, summed over the pairs.
  const trainedTokens = (b: number) => batch.lossWeights.slice(b * batch.seqLen, (b + 1) * batch.seqLen).reduce((a, w) => a + w, 0);
  const nll = [0, 2].reduce((a, b) => a - logps[b] / trainedTokens(b), 0);
  assert.ok(Math.abs(got(IO.preferredNllSum) - nll) < 1e-10, `preferred NLL ${got(IO.preferredNllSum)} vs ${nll}`);
});

test('DPO loss stays finite for huge margins (−log σ(z) without overflow)', async () => {
  const config = tinyConfig({ num_hidden_layers: 1 });
  const weights = embeddedWeights(randomWeights(config, 7));
  const batch = pairsBatch(config.vocabSize, 5);
  const adapter = randomTensors(loraSpecs(config, lora), 13, 0.4);
  const s = await session(buildDpoGraph('grad', config, weights, lora, bucketOf(batch), { dtype: 'float64' }));
  const out = await s.run(dpoFeeds(config, batch, adapter, [5000, -5000, -5000, 5000], 2, 1));
  await s.close();
  const loss = (out[IO.lossSum].data as Float64Array)[0];
  const logps = out[IO.sequenceLogps].data as Float64Array;
  // Pair 0: z ≈ −20000 → loss ≈ −z; pair 1: z ≈ +20000 → loss ≈ 0.
  const z0 = 2 * (logps[0] - 5000 - (logps[1] + 5000));
  assert.ok(Number.isFinite(loss) && Math.abs(loss + z0) < 1e-6 * Math.abs(z0), `loss ${loss}, z0 ${z0}`);
  for (const p of loraSpecs(config, lora)) assert.ok((out[IO.grad(p.name)].data as Float64Array).every(Number.isFinite), p.name);
});

const root = mkdtempSync(join(tmpdir(), 'localtune-dpo-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('DPO trainer: reference = start model, step 0 has loss log 2; training widens the margin; a resumed trainer recomputes the same reference', async () => {
  const modelDir = join(root, 'model');
  const config = writeTinyModelDir(modelDir, TINY_CONFIG_JSON, 7);
  const small: LoraConfig = { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'] };
  const specs = loraSpecs(config, small);
  // A start adapter with non-zero B (as an ft: model's), so the reference differs from the bare base.
  const random = randomTensors(specs, 3, 0.2);
  const start: AdapterTensors = new Map(specs.map((p) => [p.name, { dims: p.dims, data: Float32Array.from(random.get(p.name)!) }]));
  const batches: PreferenceBatch[] = [
    { batch: randomBatch(config.vocabSize, 16, [16, 12, 9, 14], 3), pairs: [0, 1] },
    { batch: randomBatch(config.vocabSize, 16, [10, 16], 4), pairs: [2] },
  ];
  const open = (adapter: AdapterTensors, referenceAdapter?: AdapterTensors) =>
    createDpoTrainer({ modelDir, cacheDir: join(root, 'cache'), lora: small, seed: 1, adapter, referenceAdapter, beta: 0.5, device: 'cpu', threads: 1 });
  const t = await open(start);
  const reference = await t.referenceLogps(batches, 3);
  assert.equal(reference.length, 6);
  assert.ok(reference.every((v) => Number.isFinite(v) && v < 0));
  const before = await t.evaluate(batches, reference);
  assert.ok(Math.abs(before.loss - Math.LN2) < 1e-5 && Math.abs(before.rewardMargin) < 1e-5 && before.rewardAccuracy === 0, JSON.stringify(before));
  assert.ok(Math.abs(before.preferredLogpShift) < 1e-5 && before.preferredNll > 0, JSON.stringify(before)); // the policy is the reference
  assert.equal(before.pairs, 3);
  let last = await t.trainStep(batches, reference, 0.02);
  assert.ok(Math.abs(last.loss - Math.LN2) < 1e-5 && last.gradNorm > 0, JSON.stringify(last));
  for (let i = 0; i < 10; i++) last = await t.trainStep(batches, reference, 0.02);
  const trained = await t.evaluate(batches, reference);
  assert.ok(trained.loss < 0.5 * Math.LN2 && trained.rewardAccuracy === 1 && trained.rewardMargin > 0.5, JSON.stringify(trained));
  assert.equal(last.step, 11);
  // Resume: the checkpoint's adapter trains on, the start adapter stays the reference, recomputed bitwise the same.
  const resumed = await open(t.getAdapter(), start);
  assert.deepEqual(await resumed.referenceLogps(batches, 3), reference);
  assert.ok(Math.abs((await resumed.evaluate(batches, reference)).loss - trained.loss) < 1e-6);
  await assert.rejects(resumed.referenceLogps(batches.slice(0, 1), 3), /do not cover pair 2/);
  await Promise.all([t.close(), resumed.close()]);
});

test('DPO trainer: micro-batches accumulate to the gradient of one batch holding every pair (a mean over pairs, RPO term included)', async () => {
  const modelDir = join(root, 'model-acc');
  const config = writeTinyModelDir(modelDir, TINY_CONFIG_JSON, 9);
  const small: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'down_proj'] };
  const specs = loraSpecs(config, small);
  const random = randomTensors(specs, 4, 0.2);
  const adapter: AdapterTensors = new Map(specs.map((p) => [p.name, { dims: p.dims, data: Float32Array.from(random.get(p.name)!) }]));
  const a = randomBatch(config.vocabSize, 16, [16, 12, 9, 14], 5);
  const b = randomBatch(config.vocabSize, 16, [10, 16], 6);
  const merged: TrainBatch = {
    rows: 6,
    seqLen: 16,
    inputIds: Int32Array.from([...a.inputIds, ...b.inputIds]),
    labels: Int32Array.from([...a.labels, ...b.labels]),
    lossWeights: Float32Array.from([...a.lossWeights, ...b.lossWeights]),
    attentionMask: Float32Array.from([...a.attentionMask, ...b.attentionMask]),
  };
  // The reference is the bare base (B = 0), the policy a random adapter: a non-zero margin and gradient.
  const base: AdapterTensors = new Map([...adapter].map(([k, v]) => [k, { dims: v.dims, data: k.includes('lora_B') ? new Float32Array(v.data.length) : v.data }]));
  const t = await createDpoTrainer({ modelDir, cacheDir: join(root, 'cache-acc'), lora: small, seed: 1, adapter, referenceAdapter: base, beta: 0.3, rpoAlpha: 0.5, device: 'cpu', threads: 1 });
  const split: PreferenceBatch[] = [
    { batch: a, pairs: [0, 1] },
    { batch: b, pairs: [2] },
  ];
  const reference = await t.referenceLogps(split, 3);
  const one = await t.gradients([{ batch: merged, pairs: [0, 1, 2] }], reference);
  const two = await t.gradients(split, reference);
  await t.close();
  assert.equal(two.pairs, 3);
  assert.ok(Math.abs(one.loss - two.loss) < 1e-6 && Math.abs(one.rewardMargin - two.rewardMargin) < 1e-6, `${one.loss} vs ${two.loss}`);
  assert.ok(one.loss !== Math.LN2);
  for (const [k, g] of one.grads) {
    const scale = Math.max(...g.data.map(Math.abs));
    g.data.forEach((x, i) => assert.ok(Math.abs(x - two.grads.get(k)!.data[i]) <= 1e-5 * Math.max(scale, 1e-3), `${k}[${i}]: ${x} vs ${two.grads.get(k)!.data[i]}`));
  }
  assert.ok([...one.grads.values()].some((g) => g.data.some((x) => x !== 0)), 'a non-zero gradient');
});
