// GET /metrics after real traffic: HTTP, generation per model (base and ft:), the adapter cache per adapter, jobs and training steps.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toFile } from 'openai';
import { DEFAULT_MODEL_ID, ensureDefaultModel } from '../../src/engine/models/default-model.ts';
import { parseModelConfig } from '../../src/engine/models/config.ts';
import { resolveLoraConfig } from '../../src/engine/lora/config.ts';
import { initAdapter } from '../../src/engine/lora/init.ts';
import { saveAdapter } from '../../src/engine/lora/peft.ts';
import { registerFineTunedModel } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { waitForJob } from '../helpers/wait.ts';

const KEY = 'sk-metrics-test-key';
const FT = `ft:${DEFAULT_MODEL_ID}:ops:metrics:Mm11Nn22`;
let dataDir: string;
let server: TestServer;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-metrics-'));
  // A fresh adapter (B = 0) registered as an ft: model of project "ops": served like a trained one.
  const modelDir = ensureDefaultModel(join(dataDir, 'models'));
  const config = parseModelConfig(JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')));
  const lora = resolveLoraConfig({ r: 4, alpha: 8, dropout: 0 });
  saveAdapter(join(dataDir, 'adapters', 'metrics'), lora, initAdapter(config, lora, 1), DEFAULT_MODEL_ID);
  await registerFineTunedModel(dataDir, { id: FT, project: 'ops', base_model: DEFAULT_MODEL_ID, adapter_dir: 'adapters/metrics', job_id: null, step: null, created_at: 1_700_000_000, base_precision: 'fp32' });
  server = await startTestServer({ dataDir, env: { LOCALTUNE_API_KEYS: `ops:${KEY}` } });
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Samples of the text format by `name{label="value",…}` with labels sorted, so lookups need not know their order. */
async function scrape(key: string | null = KEY): Promise<{ status: number; type: string | null; samples: Map<string, number> }> {
  const res = await fetch(`${server.url}/metrics`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const samples = new Map<string, number>();
  if (res.status === 200) {
    for (const line of (await res.text()).split('\n')) {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) continue;
      const labels = [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => `${k}="${v}"`).sort();
      samples.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
    }
  }
  return { status: res.status, type: res.headers.get('content-type'), samples };
}

/** The sample `name` with these labels (any order); undefined when absent. */
const sample = (samples: Map<string, number>, name: string, labels: Record<string, string> = {}) =>
  samples.get(`${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',')}}`);

test('GET /metrics needs a key when keys exist, and counts HTTP, generation, adapter cache and training after real traffic', { timeout: 180_000 }, async () => {
  const refused = await fetch(`${server.url}/metrics`);
  assert.equal(refused.status, 401);
  assert.equal(((await refused.json()) as { error: { message: string } }).error.message.startsWith("You didn't provide an API key"), true);

  const client = server.client(KEY);
  const ask = { messages: [{ role: 'user' as const, content: 'Hello there' }], max_tokens: 6, temperature: 0 };
  const base = await client.chat.completions.create({ model: DEFAULT_MODEL_ID, ...ask });
  const tuned = [await client.chat.completions.create({ model: FT, ...ask }), await client.chat.completions.create({ model: FT, ...ask, stream: false })];
  await client.models.list();
  await assert.rejects(client.models.retrieve('no-such-model'), (e: { status?: number }) => e.status === 404);

  const line = JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] });
  const file = await client.files.create({ file: await toFile(Buffer.from(Array(10).fill(line).join('\n')), 't.jsonl'), purpose: 'fine-tune' });
  const created = await client.fineTuning.jobs.create({ model: DEFAULT_MODEL_ID, training_file: file.id, hyperparameters: { n_epochs: 1, batch_size: 2 } });
  const job = await waitForJob(client, created.id, { context: () => server.output().slice(-4000) });
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));

  const { status, type, samples } = await scrape();
  assert.equal(status, 200);
  assert.match(type ?? '', /^text\/plain; version=0\.0\.4/);
  const s = (name: string, labels?: Record<string, string>) => sample(samples, name, labels);

  // HTTP: by route pattern and status, with latency.
  assert.ok(s('localtune_http_requests_total', { method: 'GET', route: '/v1/models', status: '200' })! >= 1);
  assert.equal(s('localtune_http_requests_total', { method: 'GET', route: '/v1/models/:model', status: '404' }), 1);
  assert.equal(s('localtune_http_request_duration_seconds_count', { method: 'POST', route: '/v1/chat/completions', status: '200' }), 3);

  // Generation per model: tokens as usage reported them, one first-token and one per-token latency per request.
  assert.equal(s('localtune_prompt_tokens_total', { model: DEFAULT_MODEL_ID }), base.usage!.prompt_tokens);
  assert.equal(s('localtune_generation_tokens_total', { model: DEFAULT_MODEL_ID }), base.usage!.completion_tokens);
  assert.equal(s('localtune_generation_tokens_total', { model: FT }), tuned[0].usage!.completion_tokens + tuned[1].usage!.completion_tokens);
  assert.equal(s('localtune_generation_requests_total', { model: FT }), 2);
  assert.equal(s('localtune_time_to_first_token_seconds_count', { model: FT }), 2);
  assert.equal(s('localtune_time_per_output_token_seconds_count', { model: DEFAULT_MODEL_ID }), base.usage!.completion_tokens > 1 ? 1 : 0);
  assert.ok(s('localtune_decode_batch_rows_count', { base_model: DEFAULT_MODEL_ID })! >= 1);
  assert.equal(s('localtune_requests_running', { base_model: DEFAULT_MODEL_ID }), 0);
  assert.equal(s('localtune_requests_waiting', { base_model: DEFAULT_MODEL_ID }), 0);
  assert.equal(s('localtune_max_batch'), 8);

  // Adapter cache, per adapter: loaded on the first request, a hit on the second.
  assert.equal(s('localtune_adapter_cache_misses_total', { model: FT }), 1);
  assert.equal(s('localtune_adapter_cache_hits_total', { model: FT }), 1);
  assert.equal(s('localtune_adapters_loaded'), 1);
  assert.equal(s('localtune_adapter_loaded', { model: FT }), 1);
  assert.ok(s('localtune_adapter_cache_bytes')! > 0);

  // Training: jobs by status, step time between consecutive steps, tokens.
  assert.equal(s('localtune_fine_tuning_jobs', { status: 'succeeded' }), 1);
  assert.equal(s('localtune_training_step_seconds_count'), 4); // 5 steps: 4 gaps between them
  assert.equal(s('localtune_training_tokens_total'), job.trained_tokens);

  await client.models.delete(FT);
  const afterDelete = (await scrape()).samples;
  assert.equal(sample(afterDelete, 'localtune_adapter_cache_evictions_total', { model: FT }), 1);
  assert.equal(sample(afterDelete, 'localtune_adapters_loaded'), 0);
  assert.equal(sample(afterDelete, 'localtune_adapter_loaded', { model: FT }), undefined);
});
