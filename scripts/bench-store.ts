// `npm run bench -- store`: API latency on each store engine, side by side in one run — embedded SQLite and PostgreSQL
// (a real server, started as the tests start it): list jobs, page through a job's events, upload a file.
// The same seeded rows (jobs and events written through the Store interface) on both; sequential requests, so each
// latency is one request alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toFile } from 'openai';
import { newId, nowSeconds } from '../src/store/ids.ts';
import type { JobRow } from '../src/store/store.ts';
import { startTestServer } from '../test/helpers/server.ts';
import { openTestStore, testEngines } from '../test/helpers/store.ts';
import { POSTGRES_URL_ENV } from '../test/helpers/postgres.ts';
import { startTestPostgres } from './lib/test-postgres.ts';

const REQUESTS = Number(process.env.LOCALTUNE_BENCH_REQUESTS ?? 300);
const JOBS = 200;
const EVENTS = 2000;

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

async function timed(n: number, call: (i: number) => Promise<void>): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call(i);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99) };
}

function job(id: string, createdAt: number): JobRow {
  return {
    id, project: 'default', created_at: createdAt, status: 'succeeded', model: 'localtune-default', base_model: 'localtune-default', start_model: null,
    method: 'supervised', training_file: 'file-bench', validation_file: null, hyperparameters: '{}', resolved_hyperparameters: '{"n_epochs":1,"batch_size":1,"learning_rate_multiplier":1}',
    lora: '{"r":8,"alpha":16,"dropout":0,"targetModules":["q_proj","v_proj"]}', base_precision: 'fp32', suffix: null, seed: 1, metadata: null,
    fine_tuned_model: null, finished_at: createdAt, error_code: null, error_message: null, error_param: null, trained_tokens: 1000, total_steps: EVENTS,
    estimated_finish: null, result_file: null, queued_at: createdAt, owner: null, lease_expires_at: null,
  };
}

const results: { engine: string; list: { p50: number; p99: number }; events: { p50: number; p99: number }; upload: { p50: number; p99: number } }[] = [];
// PostgreSQL on a throwaway server, as the tests start it (unless this runs under scripts/run-tests.mjs, which has one).
const postgres = process.env[POSTGRES_URL_ENV] ? undefined : await startTestPostgres();
if (postgres) process.env[POSTGRES_URL_ENV] = postgres.url;
try {
  for (const engine of await testEngines()) {
    const dataDir = mkdtempSync(join(tmpdir(), `localtune-bench-store-${engine.name}-`));
    // Seeded before the server starts, through the same interface the server uses.
    const store = await openTestStore(dataDir, engine);
    const base = nowSeconds() - JOBS;
    for (let i = 0; i < JOBS; i++) await store.jobs.insert(job(newId('ftjob-'), base + i), [{ message: 'Created fine-tuning job' }]);
    const eventsJob = newId('ftjob-');
    await store.jobs.insert(job(eventsJob, base + JOBS), []);
    for (let step = 1; step <= EVENTS; step++) await store.jobs.putMetricsEvent(eventsJob, step, `Step ${step}/${EVENTS}: training loss=1.00`, { step, train_loss: 1 });
    await store.close();

    const server = await startTestServer({ dataDir, env: engine.env });
    try {
      const client = server.client();
      await client.fineTuning.jobs.list({ limit: 20 });
      const list = await timed(REQUESTS, async () => void (await client.fineTuning.jobs.list({ limit: 20 })));
      // Each request pages on from a cursor deep in the job's events, as `jobs events --follow` and the dashboard do.
      const cursors = (await client.fineTuning.jobs.listEvents(eventsJob, { limit: 100 })).data.map((e) => e.id);
      const events = await timed(REQUESTS, async (i) => void (await client.fineTuning.jobs.listEvents(eventsJob, { limit: 20, after: cursors[i % cursors.length] })));
      const body = Buffer.from(Array.from({ length: 400 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `q${i}` }, { role: 'assistant', content: 'a'.repeat(200) }] })).join('\n'));
      const upload = await timed(Math.min(REQUESTS, 100), async (i) => void (await client.files.create({ file: await toFile(body, `bench-${i}.jsonl`), purpose: 'fine-tune' })));
      results.push({ engine: engine.name, list, events, upload });
    } finally {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
} finally {
  await postgres?.stop();
}

console.log(`API latency per store engine (ms), ${REQUESTS} sequential requests (uploads: ${Math.min(REQUESTS, 100)} of ~90 KB); ${JOBS} jobs, ${EVENTS} events of one job:`);
const sqlite = results.find((r) => r.engine === 'sqlite')!;
for (const r of results) {
  const ratio = (k: 'list' | 'events' | 'upload') => (r === sqlite ? '' : ` (${(r[k].p50 / sqlite[k].p50).toFixed(2)}× SQLite)`);
  console.log(`  ${r.engine.padEnd(9)} list jobs p50 ${r.list.p50.toFixed(2)} p99 ${r.list.p99.toFixed(2)}${ratio('list')} | event page p50 ${r.events.p50.toFixed(2)} p99 ${r.events.p99.toFixed(2)}${ratio('events')} | upload p50 ${r.upload.p50.toFixed(2)} p99 ${r.upload.p99.toFixed(2)}${ratio('upload')}`);
}
