// Starting and stopping the HTTP server: open the database, recover file storage, pick the bind address, listen.
import { once } from 'node:events';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Config } from './config.ts';
import { createApp } from './http/app.ts';
import { keysConfigured } from './http/auth.ts';
import type { AppContext } from './http/context.ts';
import { ensureDefaultModel } from './engine/models/default-model.ts';
import { createModelPool } from './engine/serve/model-pool.ts';
import { createMetrics } from './http/metrics.ts';
import { fineTuningJobStore } from './store/fine-tuning-jobs.ts';
import { apiKeyStore } from './store/api-keys.ts';
import { blobStore } from './store/blobs.ts';
import { openDatabase } from './store/db.ts';
import { fileStore } from './store/files.ts';
import { createModelCatalog } from './jobs/model-catalog.ts';
import { createJobScheduler } from './jobs/scheduler.ts';
import { uploadStore } from './store/uploads.ts';
import { startTrainingWorker } from './jobs/worker/start-training-worker.ts';

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
async function sweepExpiredFiles(ctx: AppContext): Promise<{ files: number; parts: number }> {
  const fileBlobs = blobStore(ctx.config.dataDir);
  const partBlobs = blobStore(ctx.config.dataDir, 'upload-parts');
  const files = fileStore(ctx.db).deleteExpired();
  const parts = uploadStore(ctx.db).sweep();
  await Promise.all([...files.map((id) => fileBlobs.remove(id)), ...parts.map((id) => partBlobs.remove(id))]);
  return { files: files.length, parts: parts.length };
}

/** Finishes what a crash may have left half done, before any request is served. */
async function recoverFileStorage(ctx: AppContext, log: (line: string) => void): Promise<void> {
  const files = fileStore(ctx.db);
  const uploads = uploadStore(ctx.db);
  // Their half-assembled files are temp files, removed just below.
  const interrupted = uploads.resetInterruptedCompletions();
  const expired = await sweepExpiredFiles(ctx);
  const { temp, orphans } = blobStore(ctx.config.dataDir).recover((id) => files.exists(id));
  const strayParts = blobStore(ctx.config.dataDir, 'upload-parts').recover((id) => uploads.partExists(id)).orphans;
  if (expired.files || expired.parts || temp || orphans || interrupted || strayParts) {
    log(`file storage: removed ${expired.files} expired file(s), ${temp} unfinished upload(s), ${orphans} orphaned blob(s), `
      + `${expired.parts} part(s) of finished or expired Uploads, ${strayParts} orphaned part(s); ${interrupted} interrupted Upload completion(s) set back to pending`);
  }
}

/** Starts localtune on `config.host:config.port` (port 0 picks a free one) and logs one `listening on URL` line. */
export async function startServer(config: Config, log: (line: string) => void = console.log): Promise<RunningServer> {
  // Base models load on their first request; the built-in default is written once, here (idempotent).
  ensureDefaultModel(config.modelsDir);
  const db = openDatabase(config.dataDir);
  const metrics = createMetrics({ servingStats: () => models.stats(), jobs: fineTuningJobStore(db), maxBatch: config.maxBatch });
  const models = createModelPool({
    modelsDir: config.modelsDir,
    cacheDir: join(config.dataDir, 'cache'),
    adapterCacheBytes: config.adapterCacheBytes,
    maxBatch: config.maxBatch,
    log,
    observe: metrics.serving,
  });
  const catalog = createModelCatalog({ db, dataDir: config.dataDir, modelsDir: config.modelsDir, aliases: config.modelAliases });
  const jobs = createJobScheduler({
    db,
    dataDir: config.dataDir,
    catalog,
    maxConcurrentJobs: config.maxConcurrentJobs,
    baseLearningRate: config.baseLearningRate,
    resumePointSeconds: config.resumePointSeconds,
    trainThreads: config.trainThreads,
    startWorker: startTrainingWorker,
    log,
    onStep: metrics.trainingStep,
  });
  const ctx: AppContext = { config, db, log, catalog, models, jobs, metrics };
  try {
    await recoverFileStorage(ctx, log);
    // Jobs left validating or running by the last run (a crash, a kill) continue; none is lost.
    jobs.start();
    let host = config.host;
    if (!keysConfigured(apiKeyStore(db), config.apiKeys)) {
      if (!LOOPBACK.has(host)) log(`no API keys configured: refusing to listen on ${host}, using 127.0.0.1`);
      host = '127.0.0.1';
      log('no API keys configured: accepting any bearer token (project "default"); create one with `localtune keys create --project NAME`');
    }
    const server = createApp(ctx, { requireKeys: !LOOPBACK.has(host) }).listen(config.port, host);
    await once(server, 'listening');
    const { address, port } = server.address() as AddressInfo;
    const url = `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
    log(`localtune listening on ${url}`);
    const expirySweep = setInterval(() => {
      sweepExpiredFiles(ctx).catch((err: unknown) => log(`file storage: expiry sweep failed: ${(err as Error).message}`));
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
        db.close();
      },
    };
  } catch (err) {
    await jobs.close();
    db.close();
    throw err;
  }
}
