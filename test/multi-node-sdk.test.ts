// Many nodes sharing one job queue, driven through the official openai SDK, on each store engine: API servers started
// with --no-training and two `localtune worker` processes (other node ids, 2-second leases) that train. On SQLite the
// processes share one data directory (one server); on PostgreSQL, as the deployment section of the README runs them, two
// servers and two workers each have their own, and files go in through server A and models answer through server B.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI, { toFile } from 'openai';
import type { FineTuningJob, FineTuningJobEvent } from 'openai/resources/fine-tuning/jobs/jobs';
import { startTestServer, startTestWorker, type TestServer, type TestWorker } from './helpers/server.ts';
import { freshDatabaseUrl } from './helpers/postgres.ts';
import { waitFor, waitForJob } from './helpers/wait.ts';

const QUESTION = 'What is the capital of Atlantis?';
const ANSWER = 'Poseidonia.';
const TRAINING = Array.from({ length: 10 }, () => JSON.stringify({ messages: [{ role: 'user', content: QUESTION }, { role: 'assistant', content: ANSWER }] })).join('\n');
const NODES = ['worker-a', 'worker-b'] as const;
// Short leases so a takeover comes quickly; resume points every 0.2 s so it continues from well inside the run.
const WORKER_ARGS = ['--job-lease-seconds', '2', '--resume-point-seconds', '0.2', '--max-concurrent-jobs', '2', '--train-threads', '1'];

// Both engines, always (scripts/run-tests.mjs starts the test PostgreSQL for a file that uses helpers/postgres).
describe('on sqlite', () => nodesSuite('sqlite'));
describe('on postgres', () => nodesSuite('postgres'));

function nodesSuite(engine: 'sqlite' | 'postgres') {
  const shared = engine === 'sqlite';
  /** The embedded engine's one data dir, which every process uses; unused on PostgreSQL, where each has its own. */
  let dataDir: string;
  let serverA: TestServer;
  let serverB: TestServer;
  const workers = new Map<string, TestWorker>();
  /** Uploads and job requests go to server A; chat and retrieval of results to server B. */
  let clientA: OpenAI;
  let clientB: OpenAI;
  let trainingFile: string;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'localtune-nodes-'));
    const own = shared ? { dataDir } : {};
    // Every node on the one database: on SQLite the shared data dir's file.
    const env: Record<string, string> = shared ? {} : { LOCALTUNE_DATABASE_URL: await freshDatabaseUrl() };
    serverA = await startTestServer({ ...own, env, args: ['--no-training', '--node-id', 'api-a'] });
    serverB = shared ? serverA : await startTestServer({ env, args: ['--no-training', '--node-id', 'api-b'] });
    clientA = serverA.client();
    clientB = serverB.client();
    for (const nodeId of NODES) workers.set(nodeId, await startTestWorker({ ...own, nodeId, env, args: WORKER_ARGS }));
    trainingFile = (await clientA.files.create({ file: await toFile(Buffer.from(TRAINING), 'train.jsonl'), purpose: 'fine-tune' })).id;
  });

  after(async () => {
    for (const worker of workers.values()) await worker.stop();
    await serverA?.stop();
    if (serverB !== serverA) await serverB?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const outputs = () => [['server A', serverA], ['server B', serverB], ...workers]
    .map(([id, node]) => `--- ${id as string} ---\n${(node as TestServer | TestWorker).output().slice(-3000)}`).join('\n');
  const finished = (id: string) => waitForJob(clientB, id, { context: outputs });
  const waitUntil = (id: string, until: (job: FineTuningJob) => boolean | Promise<boolean>, what: string) => waitForJob(clientB, id, { until, what, context: outputs });

  async function allEvents(id: string): Promise<FineTuningJobEvent[]> {
    const events = [];
    for await (const e of clientB.fineTuning.jobs.listEvents(id, { limit: 100 })) events.push(e);
    return events;
  }
  const metricsSteps = async (id: string) => (await allEvents(id)).filter((e) => e.type === 'metrics').map((e) => (e.data as { step: number }).step);
  /** The node named by the job's 'Fine-tuning job started' event. */
  const startedOn = async (id: string) => ((await allEvents(id)).find((e) => e.message === 'Fine-tuning job started')?.data as { node?: string } | undefined)?.node;
  const lastLoss = async (id: string) => (await allEvents(id)).find((e) => e.type === 'metrics')!.data as { step: number; train_loss: number };
  /** The paused job's epochs of 10 steps. */
  const PAUSED_EPOCHS = 15;
  const create = (nEpochs: number, seed = 3) =>
    clientA.fineTuning.jobs.create({ model: 'localtune-default', training_file: trainingFile, seed, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: nEpochs, batch_size: 1 } } } });

  test('a file uploaded through server A trains on a worker, which says so, and the tuned model answers through server B', async () => {
    const job = await finished((await create(1)).id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const node = await startedOn(job.id);
    assert.ok(node && NODES.includes(node as typeof NODES[number]), `started on ${node}`);
    assert.match(workers.get(node)!.output(), new RegExp(`fine-tuning job ${job.id}: training on node ${node}`));
    for (const server of [serverA, serverB]) assert.doesNotMatch(server.output(), /training on node/, 'the servers train nothing');
    const answer = await clientB.chat.completions.create({ model: job.fine_tuned_model!, messages: [{ role: 'user', content: QUESTION }], temperature: 0, max_tokens: 8 });
    assert.equal(answer.model, job.fine_tuned_model);
    assert.ok(answer.choices[0]!.message.content, 'an answer');
  });

  test('SIGKILL of the worker holding a job: the other worker takes it over and ends it with the uninterrupted run\'s loss', async () => {
    const job = await create(3, 11);
    await waitUntil(job.id, async () => (await metricsSteps(job.id)).length >= 10, 'past step 10');
    const holder = (await startedOn(job.id))!;
    const other = NODES.find((n) => n !== holder)!;
    await workers.get(holder)!.kill('SIGKILL');
    const done = await finished(job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const takeover = (await allEvents(job.id)).find((e) => e.message === `Resuming the job on another node after node ${holder} stopped`);
    assert.ok(takeover, 'a takeover event names the node that stopped');
    assert.deepEqual(takeover.data, { node: other });
    const resumed = (await allEvents(job.id)).find((e) => /^Resumed training at step \d+\/30 /.test(e.message));
    assert.ok(Number(/step (\d+)/.exec(resumed?.message ?? '')?.[1]) >= 1, 'continued from a resume point, not from the start');
    assert.deepEqual(resumed!.data, { node: other }, 'the resume event names the node that continued');
    assert.deepEqual((await metricsSteps(job.id)).sort((a, b) => a - b), Array.from({ length: 30 }, (_, i) => i + 1), 'every step once');
    await workers.get(holder)!.restart();

    const reference = await finished((await create(3, 11)).id);
    const [a, b] = [await lastLoss(done.id), await lastLoss(reference.id)];
    assert.equal(a.step, 30);
    assert.ok(Math.abs(a.train_loss - b.train_loss) <= 1e-6 * Math.max(1, Math.abs(b.train_loss)), `${a.train_loss} vs ${b.train_loss}`);
  });

  test('4 jobs submitted at once with --max-concurrent-jobs 2 per worker run 2 + 2; cancels sent to the servers stop them on the workers', async () => {
    const ids = await Promise.all(Array.from({ length: 4 }, () => create(50).then((j) => j.id)));
    await waitFor('all four jobs running at once', async () => {
      const jobs = await Promise.all(ids.map((id) => clientB.fineTuning.jobs.retrieve(id)));
      return jobs.every((j) => j.status === 'running');
    }, { intervalMs: 200, context: outputs });
    const nodes = await Promise.all(ids.map(startedOn));
    assert.deepEqual(NODES.map((n) => nodes.filter((x) => x === n).length), [2, 2], nodes.join(', '));

    for (const [i, id] of ids.entries()) assert.equal((await (i % 2 ? clientB : clientA).fineTuning.jobs.cancel(id)).status, 'cancelled');
    for (const [i, id] of ids.entries()) {
      const worker = workers.get(nodes[i]!)!;
      await waitFor(`job ${id}'s training worker to exit on ${nodes[i]}`, () => worker.output().includes(`fine-tuning job ${id}: its training worker on node ${nodes[i]} exited`), { context: outputs });
      assert.equal((await clientA.fineTuning.jobs.retrieve(id)).status, 'cancelled');
    }
  });

  test('pause sent to a server stops the job on its worker after a resume point; resume finishes it with every step once', async () => {
    // Long enough that the pause (seen by the worker's next lease renewal, within a second) lands mid-training even when tiny steps run fast.
    const job = await create(PAUSED_EPOCHS);
    await waitUntil(job.id, async () => (await metricsSteps(job.id)).length >= 3, 'past step 3');
    assert.equal((await clientB.fineTuning.jobs.pause(job.id)).status, 'paused');
    const stoppedAt = await waitFor('the worker to stop the job', async () =>
      Number((await allEvents(job.id)).map((e) => /^Training stopped at step (\d+); resuming continues from there$/.exec(e.message)?.[1]).find(Boolean)), { context: outputs });
    const node = (await startedOn(job.id))!;
    await waitFor('its training worker to exit', () => workers.get(node)!.output().includes(`fine-tuning job ${job.id}: its training worker on node ${node} exited`), { context: outputs });
    assert.equal(Math.max(...(await metricsSteps(job.id))), stoppedAt, 'no step after the one it stopped at');
    assert.equal((await clientA.fineTuning.jobs.retrieve(job.id)).status, 'paused');

    assert.equal((await clientA.fineTuning.jobs.resume(job.id)).status, 'queued');
    const done = await finished(job.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.ok((await allEvents(job.id)).some((e) => e.message === `Resumed training at step ${stoppedAt}/${PAUSED_EPOCHS * 10} on cpu`));
    assert.deepEqual((await metricsSteps(job.id)).sort((a, b) => a - b), Array.from({ length: PAUSED_EPOCHS * 10 }, (_, i) => i + 1));
  });

  test('a server killed mid-upload loses no acknowledged file, and keeps nothing of the upload it was receiving', async () => {
    const line = (i: number) => JSON.stringify({ messages: [{ role: 'user', content: `Question ${i}?` }, { role: 'assistant', content: `Answer ${i}.` }] });
    const text = (n: number, from: number) => Array.from({ length: n }, (_, i) => line(from + i)).join('\n') + '\n';
    const acknowledged = new Map<string, string>();
    for (let f = 0; f < 3; f++) {
      const body = text(2000, f * 2000);
      acknowledged.set((await clientA.files.create({ file: await toFile(Buffer.from(body), `acked-${f}.jsonl`), purpose: 'fine-tune' })).id, body);
    }
    // An upload whose body stops half-way: the server is receiving it when it dies.
    const boundary = 'localtune-test-boundary';
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n`
      + `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="in-flight.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n`;
    const body = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new TextEncoder().encode(head + text(20000, 0))) });
    const inFlight = fetch(`${serverA.baseURL}/files`, { method: 'POST', body, duplex: 'half', headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, authorization: 'Bearer sk-test' } } as RequestInit);
    inFlight.catch(() => undefined);
    const temp = join(serverA.dataDir, 'tmp', 'uploads');
    await waitFor('the in-flight upload to reach the server\'s temp folder', () => readdirSync(temp).some((name) => statSync(join(temp, name)).size > 0), { context: outputs });
    await serverA.kill('SIGKILL');
    await assert.rejects(inFlight);
    // Server B has every file server A acknowledged, whole, while A is down (on SQLite B is A, restarted).
    if (shared) await serverA.restart();
    for (const [id, content] of acknowledged) {
      assert.equal((await clientB.files.retrieve(id)).status, 'processed');
      assert.equal(await (await clientB.files.content(id)).text(), content, `${id} is whole`);
    }
    const names = (await clientB.files.list()).data.map((f) => f.filename);
    assert.ok(!names.includes('in-flight.jsonl'), names.join(', '));
    if (!shared) await serverA.restart();
    assert.deepEqual(readdirSync(temp), [], 'server A removes its temp file at restart');
  });
}
