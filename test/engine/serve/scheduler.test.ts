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
const options = { modelId: 'tiny', decoder, eosTokenIds: [10], contextLength: 64, maxBatch: 4 };
const scheduler = createGenerationScheduler(runner, options);

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
  const jsonScheduler = createGenerationScheduler(runner, { ...options, decoder: { decode: (ids) => Array.from(ids, (i) => chars[i] ?? '').join('') }, eosTokenIds: [10] });
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

/** An adapter with one B matrix far larger than its shape, as a damaged file could give: every run with it in the batch throws. */
function damaged(good: PreparedAdapter): PreparedAdapter {
  const [first] = good.b.keys();
  const b = new Map(good.b);
  b.set(first!, new Float32Array(100_000));
  return { ...good, key: `${good.key}-damaged`, b };
}

test('a run that fails fails only the request at fault: the other rows run again alone and equal their solo runs, and the log names the model and requests', async () => {
  const log: string[] = [];
  const guarded = createGenerationScheduler(runner, { ...options, log: (line) => log.push(line) });
  const good = [0, 1, 2].map((i) => ({ ...request(i), tag: `req_good${i}` }));
  const solo: Awaited<ReturnType<typeof outcome>>[] = [];
  for (const r of good) solo.push(await outcome(r));
  // The first request starts the loop alone; the next three share one prefill, which throws on the damaged adapter.
  const first = guarded.submit(good[0]!);
  const bad = guarded.submit({ ...request(4), adapter: damaged(adapters[1]!), tag: 'req_bad' });
  const others = [first, ...good.slice(1).map((r) => guarded.submit(r))].map((p) =>
    p.then((res) => ({ text: res.text, finish: res.finishReason, ids: res.tokens.map((t) => t.id), n: res.completionTokens })));
  await assert.rejects(bad, RangeError);
  assert.deepEqual(await Promise.all(others), solo);
  assert.equal(runner.rows.length, 0);
  assert.match(log[0]!, /^generation on tiny: prefill of 3 row\(s\) failed; running request\(s\) req_bad, req_good1, req_good2 again, each alone: RangeError/);
  assert.match(log[1]!, /^generation on tiny: prefill of 1 row\(s\) failed; failing request\(s\) req_bad: RangeError/);
  assert.equal(log.length, 2);
});

test('a decode step that throws is retried: each row continues alone from where it was and ends as its solo run', async () => {
  let failures = 1;
  // The real runner with one transient fault injected into the first batched decode.
  const flaky = Object.create(runner, {
    decode: { value: (tokens: number[]) => (tokens.length > 1 && failures-- > 0 ? Promise.reject(new Error('device lost')) : runner.decode(tokens)) },
  }) as typeof runner;
  const log: string[] = [];
  const retried = createGenerationScheduler(flaky, { ...options, log: (line) => log.push(line) });
  const reqs = [5, 6, 7].map((i) => ({ ...request(i), maxTokens: 12, stop: [] }));
  const solo: Awaited<ReturnType<typeof outcome>>[] = [];
  for (const r of reqs) solo.push(await outcome(r));
  const streamed = reqs.map(() => '');
  const results = await Promise.all(reqs.map((r, i) => retried.submit({ ...r, onText: (text) => (streamed[i] += text) })));
  results.forEach((res, i) => {
    assert.deepEqual({ text: res.text, finish: res.finishReason, ids: res.tokens.map((t) => t.id), n: res.completionTokens }, solo[i], `request ${i}`);
    assert.equal(streamed[i], res.text, 'streamed text is neither repeated nor lost');
  });
  assert.equal(failures, 0, 'one batched decode failed, and the retried rows then ran alone');
  assert.match(log.join('\n'), /^generation on tiny: decode of 3 row\(s\) failed; running request\(s\) -, -, - again, each alone: Error: device lost/);
  assert.equal(runner.rows.length, 0);
});
