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
import { createScheduler, type GenerationRequest } from '../../../src/engine/serve/scheduler.ts';
import { createGrammarEngine, type TokenConstraint } from '../../../src/engine/serve/grammar/grammar-engine.ts';
import type { ModelTokenizer } from '../../../src/engine/models/tokenizer.ts';
import { randomTensors, TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'localtune-sched-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'model');
const config = writeTinyModelDir(modelDir, TINY_CONFIG_JSON, 4);
const runner = await createModelRunner({ modelDir, cacheDir: join(dir, 'cache'), config, contextLength: 64, device: 'cpu', threads: 1 });
after(() => runner.close());
/** Token id i is the letter 'a' + i; id 10 ends the turn. */
const decoder = { decode: (ids: ArrayLike<number>) => Array.from(ids, (i) => String.fromCharCode(97 + i)).join('') };
const scheduler = createScheduler(runner, { decoder, eosTokenIds: [10], contextLength: 64, maxBatch: 4 });

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

test('rows with a grammar share the batch with free rows: they follow it, the free rows are unchanged, every matcher is released', async () => {
  // The same 11 ids spelled as JSON characters for xgrammar (id 10 ends the turn); the grammar: one of three strings.
  const chars = ['"', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'];
  const vocabulary = { tokens: [...chars, ''], special: new Set([10]), encoding: 'raw' as const, prependsSpace: false };
  const engine = createGrammarEngine({ vocabulary: () => vocabulary, eosTokenIds: [10] } as unknown as ModelTokenizer, { vocabSize: 11 });
  const grammar = await engine.compile({ json: { schema: { enum: ['ab', 'bad', 'cafe'] }, strict: true } });
  let live = 0;
  const constrained = async (): Promise<TokenConstraint> => {
    const c = await engine.constraint(grammar);
    live++;
    return { ...c, release: () => (live--, c.release()) };
  };
  const jsonScheduler = createScheduler(runner, { decoder: { decode: (ids) => Array.from(ids, (i) => chars[i] ?? '').join('') }, eosTokenIds: [10], contextLength: 64, maxBatch: 4 });
  const free = [request(5), request(6)];
  const solo = await Promise.all(free.map(async (r) => (await jsonScheduler.submit(r)).text));
  const rows = await Promise.all([
    ...free.map((r) => jsonScheduler.submit(r)),
    ...[0, 1, 2, 3, 4, 5].map(async (i) => jsonScheduler.submit({ ...request(i), maxTokens: 20, stop: [], constraint: await constrained() })),
  ]);
  assert.deepEqual(rows.slice(0, 2).map((r) => r.text), solo);
  for (const r of rows.slice(2)) {
    assert.ok(['"ab"', '"bad"', '"cafe"'].includes(r.text), r.text);
    assert.equal(r.finishReason, 'stop');
  }
  const controller = new AbortController();
  const aborted = jsonScheduler.submit({ ...request(1), maxTokens: 20, signal: controller.signal, onText: () => controller.abort(), constraint: await constrained() });
  await assert.rejects(aborted, { name: 'AbortError' });
  await jsonScheduler.submit(request(2)); // the next step drops the aborted row
  assert.equal(live, 0);
  assert.equal(runner.rows.length, 0);
});
