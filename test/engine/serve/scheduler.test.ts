// Continuous batching: requests joining mid-decode, several adapters and sampling settings at once, each equal to its solo run; abort frees the slot.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveAdapter } from '../../../src/engine/lora/peft.ts';
import { resolveLoraConfig } from '../../../src/engine/lora/config.ts';
import { loraSpecs } from '../../../src/engine/train/graphs.ts';
import { createModelRunner } from '../../../src/engine/serve/model-runner.ts';
import { prepareAdapter, type PreparedAdapter } from '../../../src/engine/serve/adapter-cache.ts';
import { createGenerationScheduler, type GenerationRequest } from '../../../src/engine/serve/scheduler.ts';
import { randomTensors, TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'localtune-sched-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'model');
const config = writeTinyModelDir(modelDir, TINY_CONFIG_JSON, 4);
const runner = await createModelRunner({ modelDir, cacheDir: join(dir, 'cache'), config, contextLength: 64, device: 'cpu', threads: 1 });
after(() => runner.close());
/** Token id i is the letter 'a' + i; id 10 ends the turn. */
const decoder = { decode: (ids: ArrayLike<number>) => Array.from(ids, (i) => String.fromCharCode(97 + i)).join('') };
const scheduler = createGenerationScheduler(runner, { decoder, eosTokenIds: [10], contextLength: 64, maxBatch: 4 });

function adapter(name: string, r: number, targets: string[], seed: number): PreparedAdapter {
  const lora = resolveLoraConfig({ r, alpha: 2 * r, dropout: 0, targetModules: targets as never });
  const specs = loraSpecs(config, lora);
  const values = randomTensors(specs, seed, 0.5);
  saveAdapter(join(dir, name), lora, new Map(specs.map((s) => [s.name, { dims: s.dims, data: Float32Array.from(values.get(s.name)!) }])), 'tiny');
  return prepareAdapter(name, join(dir, name), config);
}
const adapters = [null, adapter('x', 2, ['q_proj', 'v_proj'], 1), adapter('y', 4, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], 2)];

function request(i: number): GenerationRequest {
  return {
    prompt: Array.from({ length: 2 + (i % 5) }, (_, t) => (i * 3 + t) % 10),
    adapter: adapters[i % 3],
    sampling: { temperature: i % 4 === 0 ? 0 : 0.7 + (i % 3) * 0.3, topP: i % 2 ? 0.9 : 1, presencePenalty: i % 3 === 1 ? 0.5 : 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: 2, seed: 100 + i },
    maxTokens: 6 + (i % 7),
    stop: i % 5 === 2 ? ['ab'] : [],
  };
}

const outcome = async (r: GenerationRequest) => {
  const res = await scheduler.submit(r);
  return { text: res.text, finish: res.finishReason, ids: res.tokens.map((t) => t.id), n: res.completionTokens };
};

test('two dozen interleaved requests over three adapters each equal their solo run', async () => {
  const N = 24;
  const solo: Awaited<ReturnType<typeof outcome>>[] = [];
  for (let i = 0; i < N; i++) solo.push(await outcome(request(i)));
  assert.ok(solo.some((s) => s.finish === 'length') && new Set(solo.map((s) => s.text)).size > N / 2);
  // Arrivals in waves while earlier ones decode, more than maxBatch at once.
  const pending = [];
  for (let i = 0; i < N; i++) {
    pending.push(outcome(request(i)));
    if (i % 5 === 4) await new Promise((r) => setTimeout(r, 2));
  }
  const together = await Promise.all(pending);
  together.forEach((t, i) => assert.deepEqual(t, solo[i], `request ${i}`));
  assert.deepEqual(scheduler.load(), { active: 0, waiting: 0 });
  assert.equal(runner.rows.length, 0);
});

test('aborting a request frees its slot at once and leaves the others unchanged', async () => {
  const long = { ...request(1), maxTokens: 40, stop: [] };
  const solo = await outcome(request(3));
  const controller = new AbortController();
  const aborted = scheduler.submit({ ...long, signal: controller.signal, onText: () => controller.abort() });
  const other = outcome(request(3));
  await assert.rejects(aborted, { name: 'AbortError' });
  assert.deepEqual(await other, solo);
  assert.equal(runner.rows.length, 0);
});
