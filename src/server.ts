// Starting and stopping a node: `serve` (API + serving, and training unless --no-training) and `worker` (training only).
// Both open the store, recover file storage and run a job scheduler; `serve` also listens.
import { once } from 'node:events';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Config } from './config.ts';
import { createApp } from './http/app.ts';
import { keysConfigured } from './http/auth.ts';
import type { AppContext } from './http/context.ts';
import { removeInterruptedTransfers } from './http/model-transfer.ts';
import { ensureDefaultModel } from './engine/models/default-model.ts';
import { createModelPool } from './engine/serve/model-pool.ts';
import { createMetrics } from './http/metrics.ts';
import { createModelCatalog, type ModelCatalog } from './jobs/model-catalog.ts';
import { createJobScheduler, type JobScheduler } from './jobs/scheduler.ts';
import { startTrainingWorker } from './jobs/worker/start-training-worker.ts';
import { openStore } from './store/open.ts';
import type { Store } from './store/store.ts';

export interface RunningServer {
  /** Base URL without /v1, e.g. `http://127.0.0.1:8000`. */
  url: string;
  ctx: AppContext;
  /** Stops accepting, drops open connections, closes the database. */
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

/** How often expired files are removed while the server runs. */
const EXPIRY_SWEEP_MS = 60_000;

/**
 * Removes expired files' rows and the parts of expired (or finished) uploads, then their blobs (a crash in
 * between leaves orphans, which start-up recovery removes). Returns how many files and parts it removed.
 */
async function sweepExpiredFiles(store: Store): Promise<{ files: number; parts: number }> {
  const files = await store.files.deleteExpired();
  const parts = await store.uploads.sweep();
  await Promise.all([...files.map((id) => store.blobs.remove(id)), ...parts.map((id) => store.parts.remove(id))]);
  return { files: files.length, parts: parts.length };
}

/** Finishes what a crash may have left half done, before any request is served. */
export async function recoverFileStorage(store: Store, log: (line: string) => void): Promise<void> {
  // Their half-assembled files are temp files, removed just below.
  const interrupted = await store.uploads.resetInterruptedCompletions();
  const expired = await sweepExpiredFiles(store);
  // In a transaction, as workers write a result file's blob and row (job-results): both or neither are seen.
  const { temp, orphans } = await store.transaction((tx) => tx.blobs.recover((id) => tx.files.exists(id)));
  const strayParts = (await store.parts.recover((id) => store.uploads.partExists(id))).orphans;
  if (expired.files || expired.parts || temp || orphans || interrupted || strayParts) {
    log(`file storage: removed ${expired.files} expired file(s), ${temp} unfinished upload(s), ${orphans} orphaned blob(s), `
      + `${expired.parts} part(s) of finished or expired Uploads, ${strayParts} orphaned part(s); ${interrupted} interrupted Upload completion(s) set back to pending`);
  }
}

interface Node {
  /** This node's name in the job queue. */
  nodeId: string;
  store: Store;
  catalog: ModelCatalog;
  jobs: JobScheduler;
}

/** What serve and worker share: the store, the model catalog and a job scheduler (started only where this node trains). */
async function openNode(config: Config, role: 'serve' | 'worker', log: (line: string) => void, onStep?: (jobId: string, step: number, tokens: number) => void): Promise<Node> {
  // Base models load on their first request; the built-in default is written once, here (idempotent).
  ensureDefaultModel(config.modelsDir);
  const store = await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl });
  const catalog = createModelCatalog({ store, dataDir: config.dataDir, modelsDir: config.modelsDir, aliases: config.modelAliases });
  // Stable across restarts, so a restarted node takes its own jobs back at once instead of waiting out their leases.
  const nodeId = config.nodeId ?? `${hostname()}:${role}:${config.dataDir}`;
  const jobs = createJobScheduler({
    store,
    nodeId,
    leaseSeconds: config.jobLeaseSeconds,
    dataDir: config.dataDir,
    catalog,
    maxConcurrentJobs: config.maxConcurrentJobs,
    baseLearningRate: config.baseLearningRate,
    resumePointSeconds: config.resumePointSeconds,
    trainThreads: config.trainThreads,
    startWorker: startTrainingWorker,
    log,
    onStep,
  });
  try {
    // Uploads are the API's: a worker sharing a data directory with a running server must not take the server's
    // upload in progress (a temp file, a blob whose row is a moment away) for a crash's leftovers.
    if (role === 'serve') await recoverFileStorage(store, log);
    return { nodeId, store, catalog, jobs };
  } catch (err) {
    await store.close();
    throw err;
  }
}

export interface RunningWorker {
  /** Lets each running job finish its step and save a resume point, then closes the store. */
  close(): Promise<void>;
}

/** `localtune worker`: validates and trains jobs from the shared queue; no HTTP. */
export async function startWorker(config: Config, log: (line: string) => void = console.log): Promise<RunningWorker> {
  const node = await openNode(config, 'worker', log);
  // Jobs this node held before it stopped continue; then it takes jobs nobody holds.
  await node.jobs.start();
  // No socket keeps a worker's process alive (the scheduler's timer does not hold it): this does, until close().
  const alive = setInterval(() => undefined, 2 ** 31 - 1);
  log(`localtune worker started as node ${node.nodeId}: up to ${config.maxConcurrentJobs} job(s) at once`);
  return {
    async close() {
      clearInterval(alive);
      await node.jobs.close();
      await node.store.close();
    },
  };
}

/** Starts localtune on `config.host:config.port` (port 0 picks a free one) and logs one `listening on URL` line. */
export async function startServer(config: Config, log: (line: string) => void = console.log): Promise<RunningServer> {
  const metrics = createMetrics({ servingStats: () => models.stats(), jobs: () => node.store.jobs, maxBatch: config.maxBatch });
  const node = await openNode(config, 'serve', log, metrics.trainingStep);
  const models = createModelPool({
    modelsDir: config.modelsDir,
    cacheDir: join(config.dataDir, 'cache'),
    adapterCacheBytes: config.adapterCacheBytes,
    maxBatch: config.maxBatch,
    basePrecision: config.basePrecision,
    log,
    observe: metrics.serving,
  });
  const { store, catalog, jobs } = node;
  const ctx: AppContext = { config, store, log, catalog, models, jobs, metrics };
  try {
    await removeInterruptedTransfers(ctx);
    // Jobs left validating or running by the last run (a crash, a kill) continue; none is lost.
    if (config.training) await jobs.start();
    let host = config.host;
    const keysAtStart = await keysConfigured(store.keys, config.apiKeys);
    if (!keysAtStart) {
      if (!LOOPBACK.has(host)) log(`no API keys configured: refusing to listen on ${host}, using 127.0.0.1`);
      host = '127.0.0.1';
      log('no API keys configured: accepting any bearer token (project "default"); create one with `localtune keys create --project NAME`');
    }
    const server = createApp(ctx, { requireKeys: !LOOPBACK.has(host), keysAtStart }).listen(config.port, host);
    await once(server, 'listening');
    const { address, port } = server.address() as AddressInfo;
    const url = `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
    log(`localtune listening on ${url}${config.training ? '' : ' (no training: jobs run on `localtune worker` nodes)'}`);
    const expirySweep = setInterval(() => {
      sweepExpiredFiles(store).catch((err: unknown) => log(`file storage: expiry sweep failed: ${(err as Error).message}`));
    }, EXPIRY_SWEEP_MS).unref();
    return {
      url,
      ctx,
      async close() {
        clearInterval(expirySweep);
        // The scheduler learns first: a worker that got the stop signal too must not look like a crash.
        const jobsClosed = jobs.close();
        const closed = once(server, 'close');
        server.close();
        server.closeAllConnections();
        await closed;
        await jobsClosed;
        await models.close();
        await store.close();
      },
    };
  } catch (err) {
    await jobs.close();
    await store.close();
    throw err;
  }
}
