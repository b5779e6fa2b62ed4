// `npm run bench -- store-api`: API latency on each store engine, SQLite and PostgreSQL, in one run: a page of the
// job list, a page of a long event list, and a small file upload (p50/p99 of sequential requests; the ratio PG/SQLite).
// Each engine gets the same data: one real job made through the API, copied to JOBS jobs, one of them with EVENTS events.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toFile } from 'openai';
import { openStore } from '../src/store/open.ts';
import { newId } from '../src/store/ids.ts';
import { startTestPostgres } from './lib/test-postgres.ts';
import { POSTGRES_URL_ENV, freshDatabaseUrl } from '../test/helpers/postgres.ts';
import { startTestServer } from '../test/helpers/server.ts';

const REQUESTS = Number(process.env.LOCALTUNE_BENCH_REQUESTS ?? 200);
const JOBS = 500;
const EVENTS = 2000;

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

async function measure(call: (i: number) => Promise<Response>): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = performance.now();
    const res = await call(i);
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99) };
}

type Case = 'job list' | 'event page' | 'file upload';

async function benchEngine(databaseUrl: string | undefined): Promise<Record<Case, { p50: number; p99: number }>> {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-bench-store-'));
  const env: Record<string, string> = databaseUrl ? { LOCALTUNE_DATABASE_URL: databaseUrl } : {};
  try {
    // One job made the real way (then cancelled, so nothing trains during the measurement) is the template of the rest.
    let server = await startTestServer({ dataDir, env });
    const client = server.client('sk-bench');
    const line = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }] });
    const file = await client.files.create({ file: await toFile(Buffer.from(Array(10).fill(line).join('\n')), 'train.jsonl'), purpose: 'fine-tune' });
    const template = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: file.id });
    await client.fineTuning.jobs.cancel(template.id);
    await server.stop();

    const store = await openStore({ dataDir, databaseUrl });
    const row = (await store.jobs.getById(template.id))!;
    for (let i = 0; i < JOBS; i++) await store.jobs.insert({ ...row, id: newId('ftjob-'), created_at: row.created_at + i }, []);
    for (let i = 0; i < EVENTS; i++) await store.jobs.addEvent(template.id, { message: `Event ${i}` });
    const events = (await store.jobs.listEvents(template.id, { limit: EVENTS }))!.rows;
    await store.close();

    server = await startTestServer({ dataDir, env });
    const headers = { authorization: 'Bearer sk-bench' };
    const upload = () => {
      const form = new FormData();
      form.set('purpose', 'fine-tune');
      form.set('file', new Blob([Array(10).fill(line).join('\n')]), 'small.jsonl');
      return fetch(`${server.baseURL}/files`, { method: 'POST', headers, body: form });
    };
    const result = {
      'job list': await measure(() => fetch(`${server.baseURL}/fine_tuning/jobs?limit=20`, { headers })),
      // Pages from all over the list, each after a different event.
      'event page': await measure((i) => fetch(`${server.baseURL}/fine_tuning/jobs/${template.id}/events?limit=20&after=${events[(i * 37) % EVENTS]!.id}`, { headers })),
      'file upload': await measure(upload),
    };
    await server.stop();
    return result;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const postgres = await startTestPostgres();
try {
  process.env[POSTGRES_URL_ENV] = postgres.url;
  const sqlite = await benchEngine(undefined);
  const pg = await benchEngine(await freshDatabaseUrl());
  console.log(`API latency per engine over ${REQUESTS} sequential requests each (ms); ${JOBS} jobs, a job with ${EVENTS} events:`);
  for (const name of Object.keys(sqlite) as Case[]) {
    const [s, p] = [sqlite[name], pg[name]];
    console.log(`  ${name.padEnd(11)} SQLite p50 ${s.p50.toFixed(2)} p99 ${s.p99.toFixed(2)} | PostgreSQL p50 ${p.p50.toFixed(2)} p99 ${p.p99.toFixed(2)} (p50 ratio ${(p.p50 / s.p50).toFixed(2)}×)`);
  }
} finally {
  await postgres.stop();
}
