// The trainer on a tiny on-disk model: loss falls, accumulation equals one big batch, same seed and data give bitwise the same adapter.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { TrainBatch } from '../../../src/engine/train/batch.ts';
import { loraSpecs } from '../../../src/engine/train/graphs.ts';
import type { LoraConfig } from '../../../src/engine/lora/config.ts';
import { createTrainer } from '../../../src/engine/train/trainer.ts';
import type { AdapterTensors } from '../../../src/engine/lora/init.ts';
import { randomBatch, randomTensors, TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'localtune-trainer-'));
after(() => rmSync(root, { recursive: true, force: true }));
const modelDir = join(root, 'model');
const config = writeTinyModelDir(modelDir, TINY_CONFIG_JSON, 7);
const lora: LoraConfig = { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'] };

function freshAdapter(seed: number): AdapterTensors {
  const specs = loraSpecs(config, lora);
  const a = randomTensors(specs, seed, 0.25);
  return new Map(specs.map((p) => [p.name, { dims: p.dims, data: p.name.includes('lora_A') ? Float32Array.from(a.get(p.name)!) : new Float32Array(a.get(p.name)!.length) }]));
}

const open = (cacheDir: string, dropout = 0, seed = 1) =>
  createTrainer({ modelDir, cacheDir: join(root, cacheDir), lora: { ...lora, dropout }, seed, adapter: freshAdapter(1), device: 'cpu', threads: 1, adamw: { weightDecay: 0.01 } });
const batches: TrainBatch[] = [randomBatch(config.vocabSize, 16, [16, 12], 3), randomBatch(config.vocabSize, 16, [9, 16], 4)];

test('loss falls on a fixed batch, graphs are cached on disk', async () => {
  const t = await open('cache-a');
  assert.equal(t.device, 'cpu');
  const first = await t.trainStep(batches, 0.05);
  let last = first;
  for (let i = 0; i < 15; i++) last = await t.trainStep(batches, 0.05);
  assert.equal(last.step, 16);
  assert.ok(last.loss < first.loss * 0.7, `loss ${first.loss} → ${last.loss}`);
  assert.ok(first.gradNorm > 0 && Number.isFinite(first.gradNorm));
  assert.equal(first.tokens, batches.reduce((n, b) => n + b.lossWeights.filter((w) => w > 0).length, 0));
  const ev = await t.evaluate(batches);
  assert.ok(ev.loss < first.loss && ev.accuracy >= 0 && ev.accuracy <= 1);
  await t.close();
  const graphs = readdirSync(join(root, 'cache-a')).filter((f) => f.startsWith('graph-'));
  assert.deepEqual(graphs.map((f) => f.split('-')[1]).sort(), ['adamw', 'eval', 'grad']);
});

test('same seed and data give bitwise the same adapter and optimizer state (with LoRA dropout)', async () => {
  const run = async (seed = 1) => {
    const t = await open('cache-b', 0.1, seed);
    for (let i = 0; i < 3; i++) await t.trainStep(batches, 0.01);
    const r = { adapter: t.getAdapter(), state: t.getOptimizerState() };
    await t.close();
    return r;
  };
  const a = await run();
  const b = await run();
  for (const [k, v] of a.adapter) assert.deepEqual(b.adapter.get(k)!.data, v.data, k);
  for (const [k, v] of a.state.v) assert.deepEqual(b.state.v.get(k)!.data, v.data, k);
  assert.equal(a.state.step, 3);
  const other = await run(2); // another seed, other dropout masks (same initial adapter)
  assert.ok([...a.adapter].some(([k, v]) => v.data.some((x, i) => x !== other.adapter.get(k)!.data[i])));
});

test('with LoRA dropout, a trainer restored from a saved state takes exactly the steps of the uninterrupted one', async () => {
  const uninterrupted = await open('cache-b', 0.1);
  for (let i = 0; i < 3; i++) await uninterrupted.trainStep(batches, 0.01);
  const before = await open('cache-b', 0.1);
  await before.trainStep(batches, 0.01);
  const saved = { adapter: before.getAdapter(), state: before.getOptimizerState() };
  await before.close();
  const restored = await open('cache-b', 0.1); // fresh sessions, as after a restart
  restored.setAdapter(saved.adapter);
  restored.setOptimizerState(saved.state);
  for (let i = 0; i < 2; i++) await restored.trainStep(batches, 0.01);
  const want = uninterrupted.getAdapter();
  for (const [k, v] of restored.getAdapter()) assert.deepEqual(v.data, want.get(k)!.data, k);
  await Promise.all([uninterrupted.close(), restored.close()]);
});

test('two micro-batches accumulate to the same step as one batch holding both', async () => {
  const merged: TrainBatch = {
    rows: 4,
    seqLen: 16,
    inputIds: Int32Array.from([...batches[0].inputIds, ...batches[1].inputIds]),
    labels: Int32Array.from([...batches[0].labels, ...batches[1].labels]),
    lossWeights: Float32Array.from([...batches[0].lossWeights, ...batches[1].lossWeights]),
    attentionMask: Float32Array.from([...batches[0].attentionMask, ...batches[1].attentionMask]),
  };
  const t1 = await open('cache-c');
  const t2 = await open('cache-c');
  const r1 = await t1.trainStep(batches, 0.01);
  const r2 = await t2.trainStep([merged], 0.01);
  assert.ok(Math.abs(r1.loss - r2.loss) < 1e-5 && Math.abs(r1.gradNorm - r2.gradNorm) < 1e-4, `${JSON.stringify(r1)} vs ${JSON.stringify(r2)}`);
  const a1 = t1.getAdapter();
  for (const [k, v] of t2.getAdapter()) v.data.forEach((x, i) => assert.ok(Math.abs(x - a1.get(k)!.data[i]) < 1e-5, k));
  await Promise.all([t1.close(), t2.close()]);
});
