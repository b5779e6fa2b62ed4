// The generation graph against the training forward (buildLogitsGraph): prefill and cached decode, with and without adapters, solo and in mixed batches.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { attentionBias } from '../../../src/engine/models/llama.ts';
import { saveAdapter } from '../../../src/engine/lora/peft.ts';
import { resolveLoraConfig, type LoraConfig } from '../../../src/engine/lora/config.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { buildLogitsGraph, loraSpecs } from '../../../src/engine/train/graphs.ts';
import { embeddedWeights } from '../../../src/engine/models/weight-source.ts';
import { createModelRunner, type ModelRunner } from '../../../src/engine/serve/model-runner.ts';
import { prepareAdapter, type PreparedAdapter } from '../../../src/engine/serve/adapter-cache.ts';
import { startThreadedModelRunner } from '../../../src/engine/serve/threaded-runner.ts';
import { randomTensors, randomWeights, TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'localtune-gen-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'model');
const config = writeTinyModelDir(modelDir, TINY_CONFIG_JSON, 3);
const weights = embeddedWeights(randomWeights(config, 3, 'float32'));

const loraQV: LoraConfig = resolveLoraConfig({ r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'v_proj', 'down_proj'] });
const loraAll: LoraConfig = resolveLoraConfig({ r: 3, alpha: 3, dropout: 0 });

/** A random (non-zero B) adapter saved in PEFT layout, and the same tensors as float32 maps for the reference graph. */
function makeAdapter(name: string, lora: LoraConfig, seed: number): { prepared: PreparedAdapter; tensors: Map<string, Float32Array> } {
  const specs = loraSpecs(config, lora);
  const tensors = new Map([...randomTensors(specs, seed, 0.4)].map(([k, v]) => [k, Float32Array.from(v)]));
  const adapterDir = join(dir, name);
  saveAdapter(adapterDir, lora, new Map(specs.map((s) => [s.name, { dims: s.dims, data: tensors.get(s.name)! }])), 'tiny');
  return { prepared: prepareAdapter(name, adapterDir, config), tensors };
}

/** Reference logits of every position [T, V] from the training forward. */
async function referenceLogits(tokens: number[], adapter: { lora: LoraConfig; tensors: Map<string, Float32Array> } | null): Promise<Float32Array> {
  const T = tokens.length;
  const s = await createSession(buildLogitsGraph(config, weights, adapter?.lora ?? null, 1, T).serialize(), { device: 'cpu', threads: 1 });
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int32', Int32Array.from(tokens), [1, T]),
    attention_bias: new ort.Tensor('float32', attentionBias(1, T, new Float32Array(T).fill(1)), [1, 1, 1, T, T]),
  };
  if (adapter) for (const p of loraSpecs(config, adapter.lora)) feeds[p.name] = new ort.Tensor('float32', adapter.tensors.get(p.name)!, p.dims);
  const out = (await s.run(feeds)).logits.data as Float32Array;
  await s.close();
  return out;
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 2e-5) {
  assert.equal(got.length, want.length, what);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  assert.ok(worst < tol, `${what}: worst difference ${worst}`);
}

let runner: ModelRunner;
after(() => runner?.close());

const V = config.vocabSize;
const seqA = [1, 4, 2, 8, 5, 7, 3, 9, 0, 6];
const seqB = [10, 2, 2, 7, 1, 3, 4, 8];

/** Prefills `prompt` tokens of `seq`, then decodes the rest one token at a time; returns logits of every position from prompt-1 on. */
async function generateSolo(seq: number[], prompt: number, adapter: PreparedAdapter | null): Promise<Float32Array[]> {
  const { rows, logits } = await runner.prefill([{ tokens: seq.slice(0, prompt), adapter }]);
  const out = [logits[0]];
  for (let t = prompt; t < seq.length; t++) out.push((await runner.decode([seq[t]]))[0].slice());
  runner.release(rows[0]);
  return out;
}

test('generation graph: prefill and cached decode equal the training forward, with and without adapters', async () => {
  runner = await createModelRunner({ modelDir, cacheDir: join(dir, 'cache'), config, contextLength: 64, device: 'cpu', threads: 1 });
  const q = makeAdapter('qv', loraQV, 5);
  const all = makeAdapter('all', loraAll, 6);
  for (const [adapter, ref] of [
    [null, null],
    [q.prepared, { lora: loraQV, tensors: q.tensors }],
    [all.prepared, { lora: loraAll, tensors: all.tensors }],
  ] as const) {
    const want = await referenceLogits(seqA, ref);
    const got = await generateSolo(seqA, 4, adapter);
    got.forEach((logits, i) => assertClose(logits, want.subarray((3 + i) * V, (4 + i) * V), `${adapter?.key ?? 'base'} position ${3 + i}`));
    // Prefill of the whole sequence (no cache) gives the last position's logits too.
    const { rows, logits } = await runner.prefill([{ tokens: seqA, adapter }]);
    runner.release(rows[0]);
    assertClose(logits[0], want.subarray((seqA.length - 1) * V), `${adapter?.key ?? 'base'} full prefill`);
  }
  assert.equal(runner.rows.length, 0);
});

/** Runs a mixed batch on `batched` (base, two adapters, different lengths, rows joining and leaving); each row must equal its solo run. */
async function checkMixedBatch(batched: ModelRunner, q: PreparedAdapter, all: PreparedAdapter): Promise<void> {
  const soloA = await generateSolo(seqA, 3, q);
  const soloB = await generateSolo(seqB, 5, all);
  const soloC = await generateSolo(seqB, 2, null);
  // A and B start together; C joins after two decode steps; B leaves first.
  const first = await batched.prefill([
    { tokens: seqA.slice(0, 3), adapter: q },
    { tokens: seqB.slice(0, 5), adapter: all },
  ]);
  const gotA = [first.logits[0]];
  const gotB = [first.logits[1]];
  const gotC: Float32Array[] = [];
  const [rowA, rowB] = first.rows;
  let rowC = null;
  let tA = 3, tB = 5, tC = 2;
  for (let step = 0; tA < seqA.length; step++) {
    if (step === 2) {
      const joined = await batched.prefill([{ tokens: seqB.slice(0, 2), adapter: null }]);
      rowC = joined.rows[0];
      gotC.push(joined.logits[0]);
    }
    const feed = batched.rows.map((r) => (r === rowA ? seqA[tA] : r === rowB ? seqB[tB] : seqB[tC]));
    const logits = await batched.decode(feed);
    batched.rows.forEach((r, i) => (r === rowA ? gotA : r === rowB ? gotB : gotC).push(logits[i].slice()));
    tA++;
    if (rowB && batched.rows.includes(rowB) && ++tB === seqB.length) batched.release(rowB);
    if (rowC && batched.rows.includes(rowC) && ++tC === seqB.length) batched.release(rowC);
  }
  batched.release(rowA);
  if (rowC) batched.release(rowC);
  gotA.forEach((l, i) => assertClose(l, soloA[i], `row A step ${i}`, 1e-5));
  gotB.forEach((l, i) => assertClose(l, soloB[i], `row B step ${i}`, 1e-5));
  assert.ok(gotC.length >= 2);
  gotC.forEach((l, i) => assertClose(l, soloC[i], `row C step ${i}`, 1e-5));
  assert.equal(batched.rows.length, 0);
}

test('a mixed batch (base, two adapters, different lengths, rows joining and leaving) equals each row run alone', () =>
  checkMixedBatch(runner, makeAdapter('qv2', loraQV, 7).prepared, makeAdapter('all2', loraAll, 8).prepared));

test('a runner in a worker thread (how the server runs models) gives the same logits as one in this thread', async () => {
  const threaded = await startThreadedModelRunner({ modelDir, cacheDir: join(dir, 'cache'), config, contextLength: 64, device: 'cpu', threads: 1 });
  const q = makeAdapter('qv3', loraQV, 7).prepared;
  const all = makeAdapter('all3', loraAll, 8).prepared;
  try {
    await checkMixedBatch(threaded, q, all);
    await checkMixedBatch(threaded, q, all); // adapters sent before travel by key now
    threaded.forgetAdapter('qv3');
    await checkMixedBatch(threaded, q, all); // a forgotten adapter is sent whole again
  } finally {
    await threaded.close();
  }
});

test('rows keep their cache when the buffers grow past a capacity bucket mid-decode', async () => {
  const long = await createModelRunner({ modelDir, cacheDir: join(dir, 'cache'), config, contextLength: 600, device: 'cpu', threads: 1 });
  const seq = Array.from({ length: 266 }, (_, i) => (i * 7 + 3) % V);
  const want = await referenceLogits(seq, null);
  const other = await long.prefill([{ tokens: seqB.slice(0, 3), adapter: null }]);
  const { logits } = await long.prefill([{ tokens: seq.slice(0, 250), adapter: null }]);
  assertClose(logits[0], want.subarray(249 * V, 250 * V), 'prefill 250');
  for (let t = 250; t < seq.length; t++) {
    const out = await long.decode([seqB[3 + ((t - 250) % 5)], seq[t]]);
    assertClose(out[1], want.subarray(t * V, (t + 1) * V), `position ${t}`, 1e-4);
  }
  long.release(other.rows[0]);
  await long.close();
});
