// The job scheduler of one node: claims jobs from the shared queue (validation, and training up to N workers at once),
// holds them by renewing their leases, restarts crashed workers, forwards cancel/pause/shutdown — whichever node they
// were asked of — and takes over the jobs of a node that stopped renewing its leases. What the workers produce is
// recorded by job-results.ts.
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { nowSeconds } from '../store/ids.ts';
import type { JobFields, JobRow, Store } from '../store/store.ts';
import type { LoraConfig } from '../engine/lora/config.ts';
import { requestedDevice } from '../engine/onnx/session.ts';
import { createJobResults, type RunProgress } from './job-results.ts';
import { applyTransition, tryTransition } from './lifecycle.ts';
import { methodLearningRate } from './methods.ts';
import type { ModelCatalog } from './model-catalog.ts';
import type { JobHyperparameters, RequestedHyperparameters } from './validate-files.ts';
import { validateInChildProcess } from './validation-process.ts';
import type { WorkerHandle, WorkerOptions } from './worker/start-training-worker.ts';
import type { TrainingSpec, WorkerMessage } from './worker-protocol.ts';

/** Starts a training worker: `startTrainingWorker` in the server; the scheduler only needs its shape. */
export type StartWorker = (spec: TrainingSpec, options: WorkerOptions) => WorkerHandle;

export interface JobSchedulerOptions {
  store: Store;
  /** This node's name in the queue (the `owner` of the jobs it holds); stable across its restarts. */
  nodeId: string;
  /** How long a claim holds without renewal: a node silent for longer loses its jobs to the others. */
  leaseSeconds: number;
  dataDir: string;
  catalog: ModelCatalog;
  maxConcurrentJobs: number;
  baseLearningRate: number;
  resumePointSeconds: number;
  trainThreads?: number;
  startWorker: StartWorker;
  log: (line: string) => void;
  /** Each training step as its worker reports it (metrics). */
  onStep?: (jobId: string, step: number, trainedTokens: number) => void;
}

export interface JobScheduler {
  /**
   * Starts taking work from the queue: first what this node held before it stopped (re-validates, resumes training),
   * then, every second, jobs nobody holds. A node that trains nothing (`serve --no-training`) never starts it.
   */
  start(): Promise<void>;
  /**
   * A job was just created in `validating_files`: look at the queue now rather than at the next tick. Resolves once
   * this node has claimed what it can (so a crash right after the answer finds the job held by this node).
   */
  submit(jobId: string): Promise<void>;
  /** Each applies its transition (throwing TransitionRefused when not allowed) and tells the job's worker, on whichever node it runs. */
  cancel(jobId: string): Promise<JobRow>;
  pause(jobId: string): Promise<JobRow>;
  resume(jobId: string): Promise<JobRow>;
  /** Stops the workers without touching job statuses: each saves a resume point after its current step, and the next start continues from there. */
  close(): Promise<void>;
}

/** Crashes in a row without a finished step after which a job fails instead of restarting again. */
const MAX_CRASHES_WITHOUT_PROGRESS = 3;
/** A cancelled worker that has not exited by then is killed (cancel writes no resume point, so nothing is lost). */
const CANCEL_GRACE_MS = 10_000;
/** How long a shutdown waits for a training step to finish and its resume point to be saved. */
const SHUTDOWN_GRACE_MS = 30_000;
/**
 * How often a node renews its leases, looks for cancels and pauses made through other nodes, and claims jobs. Polling
 * rather than LISTEN/NOTIFY: it works the same on both engines, and a second's delay is well within one training step.
 */
const TICK_MS = 1_000;
/** A job nobody holds: what a node releasing it (pause, validated into the queue) sets. */
const RELEASED: JobFields = { owner: null, lease_expires_at: null };

interface Run extends RunProgress {
  spec: TrainingSpec;
  handle: WorkerHandle;
  /** The worker sent succeeded, stopped or failed: its exit is expected. */
  finished: boolean;
  /** Messages are handled one after another, in order, even the ones that write files. */
  queue: Promise<void>;
}

export function createJobScheduler(o: JobSchedulerOptions): JobScheduler {
  const { store } = o;
  const { jobs, blobs } = store;
  const results = createJobResults({ store, dataDir: o.dataDir, catalog: o.catalog });
  const { fail } = results;
  const dataDir = resolve(o.dataDir);
  const active = new Map<string, Run>();
  const crashes = new Map<string, number>();
  /** Validations in progress, so a cancel or shutdown can stop them. */
  const validations = new Map<string, AbortController>();
  let closing = false;
  let started = false;
  let ticker: NodeJS.Timeout | undefined;
  const lease = (): JobFields => ({ owner: o.nodeId, lease_expires_at: Date.now() + o.leaseSeconds * 1000 });
  const logged = (what: string) => (err: unknown) => o.log(`fine-tuning scheduler: ${what}: ${(err as Error).stack ?? err}`);

  async function validate(job: JobRow): Promise<void> {
    const abort = new AbortController();
    validations.set(job.id, abort);
    const result = await (async () => validateInChildProcess({
      method: job.method,
      modelDir: o.catalog.baseModelDir(job.base_model),
      trainingPath: await blobs.localPath(job.training_file),
      validationPath: job.validation_file === null ? null : await blobs.localPath(job.validation_file),
      hyperparameters: JSON.parse(job.hyperparameters) as RequestedHyperparameters,
    }, o.log, abort.signal))().finally(() => validations.delete(job.id));
    if (!result.ok) return fail(job.id, result.error);
    await store.transaction(async (tx) => {
      const moved = await tryTransition(tx.jobs, job.id, 'validated', { message: 'Files validated, moving job to queued state' }, {
        resolved_hyperparameters: JSON.stringify(result.hyperparameters), queued_at: nowSeconds(), ...RELEASED,
      });
      if (moved) for (const warning of result.statistics.warnings) await tx.jobs.addEvent(job.id, { level: 'warn', message: `Training file: ${warning}` });
    });
  }

  function validateLogged(job: JobRow) {
    validate(job).catch(async (err) => {
      // Stopped on purpose: the job was cancelled, or the node is shutting down (whoever takes the job validates again).
      if (closing || (err as Error).name === 'AbortError') return;
      o.log(`fine-tuning job ${job.id}: validation failed unexpectedly: ${(err as Error).stack ?? err}`);
      await fail(job.id, { code: 'validation_error', message: `The files could not be validated: ${(err as Error).message}`, param: null });
    }).catch(logged(`job ${job.id}`)).finally(pump);
  }

  async function specOf(job: JobRow): Promise<TrainingSpec> {
    const hp = JSON.parse(job.resolved_hyperparameters!) as JobHyperparameters;
    let startAdapterDir: string | null = null;
    if (job.start_model !== null) {
      const start = await store.models.get(job.project, job.start_model);
      if (!start) throw Object.assign(new Error(`The model ${job.start_model} that training continues from was deleted.`), { code: 'model_not_available', param: 'model' });
      startAdapterDir = await o.catalog.adapterDirOf(start);
    }
    return {
      jobId: job.id,
      method: job.method,
      modelDir: o.catalog.baseModelDir(job.base_model),
      cacheDir: join(dataDir, 'cache', job.base_model),
      startAdapterDir,
      trainingFile: await blobs.localPath(job.training_file),
      validationFile: job.validation_file === null ? null : await blobs.localPath(job.validation_file),
      hyperparameters: {
        nEpochs: hp.n_epochs, batchSize: hp.batch_size, learningRate: hp.learning_rate_multiplier * methodLearningRate(job.method, o.baseLearningRate), beta: hp.beta, rpoAlpha: hp.rpo_alpha,
      },
      lora: JSON.parse(job.lora) as LoraConfig,
      basePrecision: job.base_precision,
      seed: job.seed,
      jobDir: results.jobDirOf(job.id),
      resumePointSeconds: o.resumePointSeconds,
      device: requestedDevice(),
      // Jobs side by side share the cores rather than each asking for all of them.
      threads: o.trainThreads ?? (o.maxConcurrentJobs > 1 ? Math.max(1, Math.floor(availableParallelism() / o.maxConcurrentJobs)) : undefined),
    };
  }

  /** Starts a worker for a job that is `running` and held by this node (just started, left running by a crash, or taken over). */
  async function launch(job: JobRow) {
    let spec: TrainingSpec;
    try {
      // The last resume point any node published (this node's own, or the one of a node that stopped): the worker continues from it.
      await store.dirs.fetch(results.resumeKeyOf(job.id));
      spec = await specOf(job);
    } catch (err) {
      const e = err as Error & { code?: string; param?: string };
      return fail(job.id, { code: e.code ?? 'server_error', message: e.message, param: e.param ?? null });
    }
    const run: Run = {
      job, spec, jobDir: spec.jobDir, finished: false, totalSteps: job.total_steps, startStep: 0, startedAt: Date.now(), queue: Promise.resolve(),
      handle: undefined as unknown as WorkerHandle,
    };
    try {
      run.handle = o.startWorker(spec, {
        onMessage: (message) => {
          run.queue = run.queue.then(() => handle(run, message)).catch((err) => {
            o.log(`fine-tuning job ${job.id}: handling worker message '${message.type}' failed: ${(err as Error).stack ?? err}`);
          });
        },
        log: (line) => o.log(`[${job.id}] ${line}`),
      });
    } catch (err) {
      return fail(job.id, { code: 'server_error', message: `The training worker could not be started: ${(err as Error).message}`, param: null });
    }
    active.set(job.id, run);
    o.log(`fine-tuning job ${job.id}: training on node ${o.nodeId}`);
    run.handle.exited.then(async ({ code, signal }) => {
      await run.queue;
      active.delete(job.id);
      o.log(`fine-tuning job ${job.id}: its training worker on node ${o.nodeId} exited (${signal ? `signal ${signal}` : `code ${code}`})`);
      if (!run.finished && !closing) await onCrash(run, code, signal);
      // A finished job is never resumed: its resume point (adapter + optimizer moments) is only taking disk space.
      const status = (await jobs.getById(job.id))?.status;
      if (status === 'succeeded' || status === 'failed' || status === 'cancelled') await store.dirs.remove(results.resumeKeyOf(job.id));
      void pump();
    }).catch(logged(`job ${job.id}: after its worker exited`));
  }

  /** A worker that exited without saying why crashed: restart it with the same spec (it resumes from its own resume point). */
  async function onCrash(run: Run, code: number | null, signal: string | null) {
    const job = await jobs.getById(run.job.id);
    // Paused or cancelled meanwhile (stopping was the point), or taken over by another node.
    if (!job || job.status !== 'running' || job.owner !== o.nodeId) return;
    const n = (crashes.get(job.id) ?? 0) + 1;
    crashes.set(job.id, n);
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    if (n >= MAX_CRASHES_WITHOUT_PROGRESS) {
      return fail(job.id, { code: 'training_crashed', message: `The training worker crashed ${n} times in a row without finishing a step (last: ${how}).`, param: null });
    }
    await jobs.addEvent(job.id, { level: 'warn', message: `The training worker stopped unexpectedly (${how}); restarting it from the last resume point` });
    await launch(job);
  }

  /** The run's own bookkeeping (is its exit expected, has it made progress), then the message's results. */
  async function handle(run: Run, m: WorkerMessage): Promise<void> {
    switch (m.type) {
      case 'step':
        // Progress past where this worker started (a resumed worker first repeats its resume step).
        if (m.metrics.step > run.startStep) crashes.delete(run.job.id);
        o.onStep?.(run.job.id, m.metrics.step, m.trainedTokens);
        break;
      case 'succeeded':
        run.finished = true;
        crashes.delete(run.job.id);
        break;
      case 'failed':
        run.finished = true;
        break;
      case 'flush':
        // Messages are handled in order, so everything sent before this one is recorded by now.
        run.handle.send({ type: 'flushed' });
        return;
      case 'stopped':
        // Stopped for a shutdown the server is not making (a stop signal sent to the worker alone): restart it, as after a crash.
        run.finished = m.reason !== 'shutdown' || closing;
        break;
    }
    await results.record(run, m, closing);
  }

  /** Tells this node's worker (or validation) of a job that a cancel or pause reached through any node. */
  function stopLocal(jobId: string, reason: 'cancel' | 'pause') {
    if (reason === 'cancel') validations.get(jobId)?.abort();
    const run = active.get(jobId);
    if (!run) return;
    run.handle.send({ type: reason });
    if (reason === 'cancel') {
      const timer = setTimeout(() => run.handle.kill('SIGKILL'), CANCEL_GRACE_MS);
      run.handle.exited.finally(() => clearTimeout(timer));
    }
  }

  /** Renews this node's leases; a job it holds that is no longer held (cancelled, paused, or taken over elsewhere) is stopped here. */
  async function keepLeases() {
    const held = new Set((await jobs.renewLeases(o.nodeId, Date.now() + o.leaseSeconds * 1000)).map((j) => j.id));
    for (const id of [...active.keys(), ...validations.keys()]) {
      if (held.has(id)) continue;
      const job = await jobs.getById(id);
      if (!job || job.status === 'cancelled') stopLocal(id, 'cancel');
      else if (job.status === 'paused') stopLocal(id, 'pause');
      else if (job.owner !== o.nodeId) {
        // Another node took the job over (this one missed its renewals): two workers must not train it.
        o.log(`fine-tuning job ${id}: node ${job.owner} holds it now; stopping this node's worker`);
        active.get(id)?.handle.kill('SIGKILL');
        validations.get(id)?.abort();
      }
    }
  }

  /**
   * Claims what this node can do now, each claim in one transaction (two nodes never take the same job): files to
   * validate, then training — jobs whose node stopped renewing first, then queued jobs oldest first — while a slot is free.
   * `reclaim`: at start, also the jobs this node held before it stopped.
   */
  async function claim(reclaim: boolean) {
    const baseModels = o.catalog.baseModels().map((m) => m.id);
    const now = Date.now();
    const reclaimFrom = reclaim ? o.nodeId : undefined;
    const toValidate = await store.transaction(async (tx) => {
      const rows = await tx.jobs.lockClaimable({ statuses: ['validating_files'], baseModels, now, limit: 16, reclaimFrom });
      const claimed: JobRow[] = [];
      for (const row of rows) {
        if (validations.has(row.id)) continue;
        if (!(await tx.jobs.update(row.id, ['validating_files'], lease()))) continue;
        const why = row.owner === o.nodeId ? 'after a server restart' : `after node ${row.owner} stopped`;
        if (row.owner !== null) await tx.jobs.addEvent(row.id, { message: `Validating the files again ${why}`, data: { node: o.nodeId } });
        claimed.push(row);
      }
      return claimed;
    });
    for (const job of toValidate) validateLogged(job);

    const free = o.maxConcurrentJobs - active.size;
    if (free <= 0) return;
    const toLaunch = await store.transaction(async (tx) => {
      const rows = await tx.jobs.lockClaimable({ statuses: ['running', 'queued'], baseModels, now, limit: free + active.size, reclaimFrom });
      const claimed: JobRow[] = [];
      // Jobs left running (by a crash or a lost node) before queued ones.
      rows.sort((a, b) => Number(b.status === 'running') - Number(a.status === 'running'));
      for (const row of rows) {
        if (claimed.length >= free) break;
        // A paused-then-resumed job whose worker is still stopping waits for it.
        if (active.has(row.id)) continue;
        if (row.status === 'queued') {
          // The hosted service's message; which node trains the job is in its data.
          const started = await tryTransition(tx.jobs, row.id, 'start', { message: 'Fine-tuning job started', data: { node: o.nodeId } }, { estimated_finish: null, ...lease() });
          if (started) claimed.push(started);
          continue;
        }
        if (!(await tx.jobs.update(row.id, ['running'], lease()))) continue;
        // No owner: left running by a version that kept none, which was this node.
        const why = row.owner === null || row.owner === o.nodeId ? 'after a server restart' : `on another node after node ${row.owner} stopped`;
        await tx.jobs.addEvent(row.id, { message: `Resuming the job ${why}`, data: { node: o.nodeId } });
        claimed.push({ ...row, ...lease() });
      }
      return claimed;
    });
    for (const job of toLaunch) await launch(job);
  }

  // Ticks and nudges never overlap: one runs, and at most one more is remembered. The promise settles after a pass
  // that began after the call.
  let ticking: Promise<void> | null = null;
  let again = false;
  let reclaim = true;
  function pump(): Promise<void> {
    if (!started || closing) return Promise.resolve();
    if (ticking) {
      again = true;
      return ticking;
    }
    ticking = (async () => {
      do {
        again = false;
        await keepLeases();
        await claim(reclaim);
        reclaim = false;
      } while (again && !closing);
    })().catch(logged('could not renew leases or claim jobs')).finally(() => {
      ticking = null;
    });
    return ticking;
  }

  async function transitionAndTell(jobId: string, name: 'cancel' | 'pause', event: string, fields: JobFields): Promise<JobRow> {
    const row = await applyTransition(jobs, jobId, name, { message: event }, fields);
    stopLocal(jobId, name);
    return row;
  }

  return {
    async start() {
      await results.removeUnusedAdapters();
      started = true;
      void pump();
      ticker = setInterval(pump, TICK_MS);
      ticker.unref();
    },
    submit: pump,
    cancel: (jobId) => transitionAndTell(jobId, 'cancel', 'Fine-tuning job cancelled', { finished_at: nowSeconds(), estimated_finish: null }),
    pause: (jobId) => transitionAndTell(jobId, 'pause', 'Fine-tuning job paused', { estimated_finish: null, ...RELEASED }),
    async resume(jobId) {
      const row = await applyTransition(jobs, jobId, 'resume', { message: 'Fine-tuning job resumed, moving job to queued state' }, { queued_at: nowSeconds(), ...RELEASED });
      void pump();
      return row;
    },
    async close() {
      closing = true;
      clearInterval(ticker);
      for (const v of validations.values()) v.abort();
      const runs = [...active.values()];
      // Each worker saves a resume point after its current step and exits; one still busy after the grace period is
      // stopped (its job then continues from its previous resume point).
      for (const run of runs) {
        run.handle.send({ type: 'shutdown' });
        const timer = setTimeout(() => run.handle.kill('SIGKILL'), SHUTDOWN_GRACE_MS);
        run.handle.exited.finally(() => clearTimeout(timer));
      }
      await Promise.all(runs.map(async (r) => {
        await r.handle.exited;
        await r.queue;
      }));
      await ticking;
      // Each job stopped where it saved its resume point: let another node take it over now rather than when the lease
      // runs out (this node, if it comes back first, takes its jobs back either way).
      if (started) await jobs.renewLeases(o.nodeId, 0);
    },
  };
}
