// The job scheduler: validates files, queues, runs up to N training workers (restarting crashed ones), forwards
// cancel/pause/shutdown, and picks up after a crash every job that was left unfinished. What the workers produce is
// recorded by job-results.ts.
import { rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import type { Db } from '../store/db.ts';
import { blobStore, type BlobStore } from '../store/blobs.ts';
import { fineTunedModelStore, type FineTunedModelStore } from '../store/fine-tuned-models.ts';
import { fineTuningJobStore, type FineTuningJobStore, type JobRow } from '../store/fine-tuning-jobs.ts';
import { nowSeconds } from '../store/ids.ts';
import type { LoraConfig } from '../engine/lora/config.ts';
import { requestedDevice } from '../engine/onnx/session.ts';
import { createJobResults, type RunProgress } from './job-results.ts';
import { applyTransition, tryTransition } from './lifecycle.ts';
import { methodLearningRate } from './methods.ts';
import type { ModelCatalog } from './model-catalog.ts';
import { RESUME_DIR } from './worker/resume-point.ts';
import type { JobHyperparameters, RequestedHyperparameters } from './validate-files.ts';
import { validateInChildProcess } from './validation-process.ts';
import type { WorkerHandle, WorkerOptions } from './worker/start-training-worker.ts';
import type { TrainingSpec, WorkerMessage } from './worker-protocol.ts';

/** Starts a training worker: `startTrainingWorker` in the server; the scheduler only needs its shape. */
export type StartWorker = (spec: TrainingSpec, options: WorkerOptions) => WorkerHandle;

export interface JobSchedulerOptions {
  db: Db;
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
  /** Picks up what the last run of the server left: re-validates, restarts running jobs, fills free slots. */
  start(): void;
  /** A job just created in `validating_files`. */
  submit(jobId: string): void;
  /** Each applies its transition (throwing TransitionRefused when not allowed) and tells the job's worker. */
  cancel(jobId: string): JobRow;
  pause(jobId: string): JobRow;
  resume(jobId: string): JobRow;
  /** Stops the workers without touching job statuses: each saves a resume point after its current step, and the next start continues from there. */
  close(): Promise<void>;
}

/** Crashes in a row without a finished step after which a job fails instead of restarting again. */
const MAX_CRASHES_WITHOUT_PROGRESS = 3;
/** A cancelled worker that has not exited by then is killed (cancel writes no resume point, so nothing is lost). */
const CANCEL_GRACE_MS = 10_000;
/** How long a shutdown waits for a training step to finish and its resume point to be saved. */
const SHUTDOWN_GRACE_MS = 30_000;

interface Run extends RunProgress {
  spec: TrainingSpec;
  handle: WorkerHandle;
  /** The worker sent succeeded, stopped or failed: its exit is expected. */
  finished: boolean;
  /** Messages are handled one after another, in order, even the ones that write files. */
  queue: Promise<void>;
}

export function createJobScheduler(o: JobSchedulerOptions): JobScheduler {
  const jobs: FineTuningJobStore = fineTuningJobStore(o.db);
  const models: FineTunedModelStore = fineTunedModelStore(o.db);
  const blobs: BlobStore = blobStore(o.dataDir);
  const results = createJobResults({ db: o.db, dataDir: o.dataDir, catalog: o.catalog });
  const { fail } = results;
  const dataDir = resolve(o.dataDir);
  const active = new Map<string, Run>();
  const crashes = new Map<string, number>();
  /** Validations in progress, so a cancel or shutdown can stop them. */
  const validations = new Map<string, AbortController>();
  let closing = false;

  async function validate(jobId: string): Promise<void> {
    const job = jobs.getById(jobId);
    if (!job || job.status !== 'validating_files') return;
    const abort = new AbortController();
    validations.set(jobId, abort);
    const result = await validateInChildProcess({
      method: job.method,
      modelDir: o.catalog.baseModelDir(job.base_model),
      trainingPath: blobs.pathOf(job.training_file),
      validationPath: job.validation_file === null ? null : blobs.pathOf(job.validation_file),
      hyperparameters: JSON.parse(job.hyperparameters) as RequestedHyperparameters,
    }, o.log, abort.signal).finally(() => validations.delete(jobId));
    if (!result.ok) return fail(jobId, result.error);
    jobs.transaction(() => {
      const moved = tryTransition(jobs, jobId, 'validated', { message: 'Files validated, moving job to queued state' }, {
        resolved_hyperparameters: JSON.stringify(result.hyperparameters), queued_at: nowSeconds(),
      });
      if (moved) for (const warning of result.statistics.warnings) jobs.addEvent(jobId, { level: 'warn', message: `Training file: ${warning}` });
    });
  }

  function validateLogged(jobId: string) {
    validate(jobId).catch((err) => {
      // Stopped on purpose: the job was cancelled, or the server is shutting down (the next start validates again).
      if (closing || (err as Error).name === 'AbortError') return;
      o.log(`fine-tuning job ${jobId}: validation failed unexpectedly: ${(err as Error).stack ?? err}`);
      fail(jobId, { code: 'validation_error', message: `The files could not be validated: ${(err as Error).message}`, param: null });
    }).catch((err) => o.log(`fine-tuning job ${jobId}: ${(err as Error).stack ?? err}`)).finally(pump);
  }

  function specOf(job: JobRow): TrainingSpec {
    const hp = JSON.parse(job.resolved_hyperparameters!) as JobHyperparameters;
    let startAdapterDir: string | null = null;
    if (job.start_model !== null) {
      const start = models.get(job.project, job.start_model);
      if (!start) throw Object.assign(new Error(`The model ${job.start_model} that training continues from was deleted.`), { code: 'model_not_available', param: 'model' });
      startAdapterDir = o.catalog.adapterDirOf(start);
    }
    return {
      jobId: job.id,
      method: job.method,
      modelDir: o.catalog.baseModelDir(job.base_model),
      cacheDir: join(dataDir, 'cache', job.base_model),
      startAdapterDir,
      trainingFile: blobs.pathOf(job.training_file),
      validationFile: job.validation_file === null ? null : blobs.pathOf(job.validation_file),
      hyperparameters: {
        nEpochs: hp.n_epochs, batchSize: hp.batch_size, learningRate: hp.learning_rate_multiplier * methodLearningRate(job.method, o.baseLearningRate), beta: hp.beta, rpoAlpha: hp.rpo_alpha,
      },
      lora: JSON.parse(job.lora) as LoraConfig,
      seed: job.seed,
      jobDir: results.jobDirOf(job.id),
      resumePointSeconds: o.resumePointSeconds,
      device: requestedDevice(),
      // Jobs side by side share the cores rather than each asking for all of them.
      threads: o.trainThreads ?? (o.maxConcurrentJobs > 1 ? Math.max(1, Math.floor(availableParallelism() / o.maxConcurrentJobs)) : undefined),
    };
  }

  /** Starts a worker for a job that is `running` (just started, or left running by a crash). */
  function launch(job: JobRow) {
    let spec: TrainingSpec;
    try {
      spec = specOf(job);
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
    run.handle.exited.then(async ({ code, signal }) => {
      await run.queue;
      active.delete(job.id);
      if (!run.finished && !closing) onCrash(run, code, signal);
      // A finished job is never resumed: its resume point (adapter + optimizer moments) is only taking disk space.
      const status = jobs.getById(job.id)?.status;
      if (status === 'succeeded' || status === 'failed' || status === 'cancelled') rmSync(join(run.spec.jobDir, RESUME_DIR), { recursive: true, force: true });
      pump();
    }).catch((err) => o.log(`fine-tuning job ${job.id}: after its worker exited: ${(err as Error).stack ?? err}`));
  }

  /** A worker that exited without saying why crashed: restart it with the same spec (it resumes from its own resume point). */
  function onCrash(run: Run, code: number | null, signal: string | null) {
    const job = jobs.getById(run.job.id);
    if (!job || job.status !== 'running') return; // paused or cancelled meanwhile: stopping was the point
    const n = (crashes.get(job.id) ?? 0) + 1;
    crashes.set(job.id, n);
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    if (n >= MAX_CRASHES_WITHOUT_PROGRESS) {
      return fail(job.id, { code: 'training_crashed', message: `The training worker crashed ${n} times in a row without finishing a step (last: ${how}).`, param: null });
    }
    jobs.addEvent(job.id, { level: 'warn', message: `The training worker stopped unexpectedly (${how}); restarting it from the last resume point` });
    launch(job);
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
      case 'stopped':
        // Stopped for a shutdown the server is not making (a stop signal sent to the worker alone): restart it, as after a crash.
        run.finished = m.reason !== 'shutdown' || closing;
        break;
    }
    await results.record(run, m, closing);
  }

  /** Starts queued jobs, oldest first, while a slot is free. Called from timers and promise callbacks, so it never throws. */
  function pump() {
    if (closing) return;
    try {
      for (const job of jobs.inStatus(['queued'])) {
        if (active.size >= o.maxConcurrentJobs) return;
        // A paused-then-resumed job whose worker is still stopping waits for it.
        if (active.has(job.id)) continue;
        const row = tryTransition(jobs, job.id, 'start', { message: 'Fine-tuning job started' }, { estimated_finish: null });
        if (row) launch(row);
      }
    } catch (err) {
      o.log(`fine-tuning scheduler: could not start queued jobs: ${(err as Error).stack ?? err}`);
    }
  }

  return {
    start() {
      results.removeUnusedAdapters();
      for (const job of jobs.inStatus(['validating_files'])) {
        jobs.addEvent(job.id, { message: 'Validating the files again after a server restart' });
        validateLogged(job.id);
      }
      for (const job of jobs.inStatus(['running'])) {
        jobs.addEvent(job.id, { message: 'Resuming the job after a server restart' });
        launch(job);
      }
      pump();
    },
    submit: (jobId) => validateLogged(jobId),
    cancel(jobId) {
      const row = applyTransition(jobs, jobId, 'cancel', { message: 'Fine-tuning job cancelled' }, { finished_at: nowSeconds(), estimated_finish: null });
      validations.get(jobId)?.abort();
      const run = active.get(jobId);
      if (run) {
        run.handle.send({ type: 'cancel' });
        const timer = setTimeout(() => run.handle.kill('SIGKILL'), CANCEL_GRACE_MS);
        run.handle.exited.finally(() => clearTimeout(timer));
      }
      return row;
    },
    pause(jobId) {
      const row = applyTransition(jobs, jobId, 'pause', { message: 'Fine-tuning job paused' }, { estimated_finish: null });
      active.get(jobId)?.handle.send({ type: 'pause' });
      return row;
    },
    resume(jobId) {
      const row = applyTransition(jobs, jobId, 'resume', { message: 'Fine-tuning job resumed, moving job to queued state' }, { queued_at: nowSeconds() });
      setImmediate(pump);
      return row;
    },
    async close() {
      closing = true;
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
    },
  };
}
