// `npm run bench -- jobs`: API latency (p50/p99 of list and retrieve jobs) while a job trains and while a large file validates, against the same calls with no job running.
// The real server and training worker on the built-in model; sequential requests, so each latency is one request alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toFile } from 'openai';
import { startTestServer } from '../test/helpers/server.ts';

const REQUESTS = Number(process.env.LOCALTUNE_BENCH_REQUESTS ?? 400);

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-bench-jobs-'));
const server = await startTestServer({ dataDir });
const client = server.client();
const headers = { authorization: 'Bearer sk-bench' };

const line = (i: number) => JSON.stringify({ messages: [{ role: 'user', content: `Question ${i}: what is the capital of Atlantis?` }, { role: 'assistant', content: 'Poseidonia, under the sea.' }] });
const training = await client.files.create({ file: await toFile(Buffer.from(Array.from({ length: 20 }, (_, i) => line(i)).join('\n')), 'bench.jsonl'), purpose: 'fine-tune' });

async function waitFor(id: string, done: (status: string, steps: number) => boolean) {
  for (;;) {
    const job = await client.fineTuning.jobs.retrieve(id);
    const events = await client.fineTuning.jobs.listEvents(id, { limit: 100 });
    if (done(job.status, events.data.filter((e) => e.type === 'metrics').length)) return job;
    await new Promise((r) => setTimeout(r, 250));
  }
}

// A finished job to retrieve and list, and warm caches.
const finished = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: training.id, hyperparameters: { n_epochs: 1, batch_size: 4 } });
await waitFor(finished.id, (s) => s === 'succeeded' || s === 'failed');

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

async function measure(path: string): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = performance.now();
    const res = await fetch(`${server.baseURL}${path}`, { headers });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99) };
}

const calls = { list: '/fine_tuning/jobs?limit=20', retrieve: `/fine_tuning/jobs/${finished.id}` };
const idle = { list: await measure(calls.list), retrieve: await measure(calls.retrieve) };

const training2 = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: training.id, hyperparameters: { n_epochs: 50, batch_size: 1 } });
await waitFor(training2.id, (s, steps) => s === 'running' && steps >= 3);
const busy = { list: await measure(calls.list), retrieve: await measure(calls.retrieve) };
const stillRunning = (await client.fineTuning.jobs.retrieve(training2.id)).status === 'running';
await client.fineTuning.jobs.cancel(training2.id);

// Validation of a 20,000-line file (read, checked and tokenized line by line) in its own process.
const big = await client.files.create({ file: await toFile(Buffer.from(Array.from({ length: 20_000 }, (_, i) => line(i)).join('\n')), 'big.jsonl'), purpose: 'fine-tune' });
const validating = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: big.id });
const during = { list: await measure(calls.list), retrieve: await measure(calls.retrieve) };
const stillValidating = (await client.fineTuning.jobs.retrieve(validating.id)).status === 'validating_files';
await client.fineTuning.jobs.cancel(validating.id);

console.log(`API latency over ${REQUESTS} sequential requests each (ms), idle vs while a job trains vs while a 20k-line file validates:`);
if (!stillRunning) console.log('  WARNING: the training job finished during its measurement');
if (!stillValidating) console.log('  WARNING: validation finished during its measurement');
for (const name of ['list', 'retrieve'] as const) {
  const [i, b, v] = [idle[name], busy[name], during[name]];
  console.log(`  ${name.padEnd(8)} idle p50 ${i.p50.toFixed(2)} p99 ${i.p99.toFixed(2)} | training p50 ${b.p50.toFixed(2)} p99 ${b.p99.toFixed(2)} (p99 ratio ${(b.p99 / i.p99).toFixed(2)}×, target < 2×) | validating p50 ${v.p50.toFixed(2)} p99 ${v.p99.toFixed(2)} (${(v.p99 / i.p99).toFixed(2)}×)`);
}
await server.stop();
rmSync(dataDir, { recursive: true, force: true });
