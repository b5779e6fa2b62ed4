// The job scheduler: validates files, queues, runs up to N training workers, turns their messages into events,
// checkpoints and models, forwards cancel/pause, and picks up after a crash every job that was left unfinished.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import type { Db } from '../store/db.ts';
import { blobStore, type BlobStore } from '../store/blobs.ts';
import { fileStore, type FileStore } from '../store/files.ts';
import { fineTunedModelStore, type FineTunedModelStore } from '../store/fine-tuned-models.ts';
import { fineTuningJobStore, type FineTuningJobStore, type JobRow } from '../store/fine-tuning-jobs.ts';
import { newId, nowSeconds, randomAlnum } from '../store/ids.ts';
import type { LoraConfig } from '../engine/lora/config.ts';
import { requestedDevice } from '../engine/onnx/session.ts';
import { applyTransition, tryTransition } from './lifecycle.ts';
import { methodLearningRate } from './methods.ts';
import { stepMetricsCsv } from './result-file.ts';
import { RESUME_DIR } from './worker/resume-point.ts';
import type { JobHyperparameters, RequestedHyperparameters } from './validate-files.ts';
import { validateInChildProcess } from './validation-process.ts';
import type { WorkerHandle, WorkerOptions } from './worker/start-training-worker.ts';
import { CHECKPOINTS_DIR, FINAL_DIR, type StepMetrics, type TrainingSpec, type WorkerMessage } from './worker-protocol.ts';

/** Starts a training worker: `startTrainingWorker` in the server; the scheduler only needs its shape. */
export type StartWorker = (spec: TrainingSpec, options: WorkerOptions) => WorkerHandle;

export interface SchedulerOptions {
  db: Db;
  dataDir: string;
  modelsDir: string;
  maxConcurrentJobs: number;
  baseLearningRate: number;
  resumePointSeconds: number;
  trainThreads?: number;
  startWorker: StartWorker;
  log: (line: string) => void;
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
/** Kept per job, as the hosted service keeps the last three epochs' checkpoints. */
export const CHECKPOINTS_KEPT = 3;

interface Run {
  job: JobRow;
  spec: TrainingSpec;
  handle: WorkerHandle;
  /** The worker sent succeeded, stopped or failed: its exit is expected. */
  finished: boolean;
  totalSteps: number | null;
  /** Where this worker started (for the step rate behind estimated_finish). */
  startStep: number;
  startedAt: number;
  /** Messages are handled one after another, in order, even the ones that write files. */
  queue: Promise<void>;
}

export function createScheduler(o: SchedulerOptions): JobScheduler {
  const jobs: FineTuningJobStore = fineTuningJobStore(o.db);
  const models: FineTunedModelStore = fineTunedModelStore(o.db);
  const files: FileStore = fileStore(o.db);
  const blobs: BlobStore = blobStore(o.dataDir);
  const dataDir = resolve(o.dataDir);
  const active = new Map<string, Run>();
  const crashes = new Map<string, number>();
  /** Validations in progress, so a cancel or shutdown can stop them. */
  const validations = new Map<string, AbortController>();
  let closing = false;

  const jobDirOf = (jobId: string) => join(dataDir, 'jobs', jobId);
  /** A folder the worker named (under its job folder) as stored in fine_tuned_models: relative to the data dir. */
  const storedDir = (run: Run, dir: string) => {
    const abs = resolve(run.spec.jobDir, dir);
    if (!abs.startsWith(run.spec.jobDir + sep)) throw new Error(`worker of ${run.job.id} named folder ${dir}, outside its job folder`);
    return relative(dataDir, abs);
  };
  /** `ft:<base>:<org>:<suffix>:` — the fixed part of every model id a job makes; ':' in a suffix would break parsing. */
  const modelPrefix = (job: JobRow) => `ft:${job.base_model}:${job.project}:${(job.suffix ?? '').replace(/[^A-Za-z0-9._-]/g, '-')}:`;

  function fail(jobId: string, error: { code: string; message: string; param?: string | null }) {
    tryTransition(jobs, jobId, 'fail', { level: 'error', message: `Fine-tuning job failed: ${error.message}` }, {
      error_code: error.code, error_message: error.message, error_param: error.param ?? null, finished_at: nowSeconds(), estimated_finish: null,
    });
  }

  async function validate(jobId: string): Promise<void> {
    const job = jobs.getById(jobId);
    if (!job || job.status !== 'validating_files') return;
    const abort = new AbortController();
    validations.set(jobId, abort);
    const result = await validateInChildProcess({
      method: job.method,
      modelDir: join(o.modelsDir, job.base_model),
      trainingPath: blobs.pathOf(job.training_file),
      validationPath: job.validation_file === null ? null : blobs.pathOf(job.validation_file),
      hyperparameters: JSON.parse(job.hyperparameters) as RequestedHyperparameters,
    }, o.log, abort.signal).finally(() => validations.delete(jobId));
    if (!result.ok) return fail(jobId, result.error);
    jobs.transaction(() => {
      const moved = tryTransition(jobs, jobId, 'validated', { message: 'Files validated, moving job to queued state' }, {
        resolved_hyperparameters: JSON.stringify(result.hyperparameters), queued_at: Date.now(),
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
      startAdapterDir = resolve(dataDir, start.adapter_dir);
    }
    return {
      jobId: job.id,
      method: job.method,
      modelDir: join(o.modelsDir, job.base_model),
      cacheDir: join(dataDir, 'cache', job.base_model),
      startAdapterDir,
      trainingFile: blobs.pathOf(job.training_file),
      validationFile: job.validation_file === null ? null : blobs.pathOf(job.validation_file),
      hyperparameters: {
        nEpochs: hp.n_epochs, batchSize: hp.batch_size, learningRate: hp.learning_rate_multiplier * methodLearningRate(job.method, o.baseLearningRate), beta: hp.beta, rpoAlpha: hp.rpo_alpha,
      },
      lora: JSON.parse(job.lora) as LoraConfig,
      seed: job.seed,
      jobDir: jobDirOf(job.id),
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
      job, spec, finished: false, totalSteps: job.total_steps, startStep: 0, startedAt: Date.now(), queue: Promise.resolve(),
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

  async function handle(run: Run, m: WorkerMessage): Promise<void> {
    const id = run.job.id;
    switch (m.type) {
      case 'started': {
        run.totalSteps = m.totalSteps;
        run.startStep = m.resumedFromStep;
        run.startedAt = Date.now();
        jobs.update(id, ['running', 'paused'], { total_steps: m.totalSteps });
        if (m.resumedFromStep > 0) jobs.addEvent(id, { message: `Resumed training at step ${m.resumedFromStep}/${m.totalSteps} on ${m.device}` });
        return;
      }
      case 'step': {
        // Progress past where this worker started (a resumed worker first repeats its resume step).
        if (m.metrics.step > run.startStep) crashes.delete(id);
        recordStep(id, m.metrics, run.totalSteps);
        const perStep = (Date.now() - run.startedAt) / 1000 / Math.max(1, m.metrics.step - run.startStep);
        const remaining = (run.totalSteps ?? m.metrics.step) - m.metrics.step;
        jobs.update(id, ['running', 'paused'], { trained_tokens: m.trainedTokens });
        jobs.update(id, ['running'], { estimated_finish: Math.round(Date.now() / 1000 + perStep * remaining) });
        return;
      }
      case 'checkpoint':
        return checkpoint(run, m);
      case 'succeeded':
        run.finished = true;
        return succeed(run, m);
      case 'stopped':
        // Stopped for a shutdown the server is not making (a stop signal sent to the worker alone): restart it, as after a crash.
        run.finished = m.reason !== 'shutdown' || closing;
        if (m.reason === 'pause') jobs.addEvent(id, { message: `Training stopped at step ${m.step}; resuming continues from there` });
        if (m.reason === 'shutdown' && closing) jobs.addEvent(id, { message: `The server is shutting down: training stopped at step ${m.step} and continues from there at the next start` });
        return;
      case 'warning':
        jobs.addEvent(id, { level: 'warn', message: m.message });
        return;
      case 'failed':
        run.finished = true;
        return fail(id, { code: m.code, message: m.message, param: m.param ?? null });
    }
  }

  function recordStep(jobId: string, metrics: StepMetrics, totalSteps: number | null) {
    const total = totalSteps ?? metrics.step;
    const parts = [`training loss=${metrics.train_loss.toFixed(2)}`];
    if (metrics.valid_loss !== undefined) parts.push(`validation loss=${metrics.valid_loss.toFixed(2)}`);
    if (metrics.full_valid_loss !== undefined) parts.push(`full validation loss=${metrics.full_valid_loss.toFixed(2)}`);
    if (metrics.train_reward_accuracy !== undefined) parts.push(`reward accuracy=${metrics.train_reward_accuracy.toFixed(2)}, reward margin=${metrics.train_reward_margin!.toFixed(2)}`);
    jobs.putMetricsEvent(jobId, metrics.step, `Step ${metrics.step}/${total}: ${parts.join(', ')}`, { ...metrics, total_steps: total });
  }

  function checkpoint(run: Run, m: Extract<WorkerMessage, { type: 'checkpoint' }>) {
    const job = run.job;
    const model = `${modelPrefix(job)}${randomAlnum(8)}:ckpt-step-${m.step}`;
    const adapterDir = storedDir(run, m.dir);
    const dropped: string[] = [];
    jobs.transaction(() => {
      const created = nowSeconds();
      // An epoch end redone after a crash already has its checkpoint.
      if (!jobs.insertCheckpoint({ id: newId('ftckpt_'), job_id: job.id, created_at: created, step_number: m.step, fine_tuned_model_checkpoint: model, metrics: JSON.stringify(m.metrics) })) return;
      models.insert({ id: model, project: job.project, base_model: job.base_model, adapter_dir: adapterDir, job_id: job.id, step: m.step, created_at: created });
      jobs.addEvent(job.id, { message: `Checkpoint created at step ${m.step} with Snapshot ID: ${model}` });
      const all = jobs.checkpoints(job.id);
      for (const old of all.slice(0, Math.max(0, all.length - CHECKPOINTS_KEPT))) {
        const row = models.get(job.project, old.fine_tuned_model_checkpoint);
        jobs.deleteCheckpoint(old.id);
        if (row) {
          models.delete(job.project, row.id);
          dropped.push(row.adapter_dir);
        }
      }
    });
    for (const dir of dropped) rmSync(resolve(dataDir, dir), { recursive: true, force: true });
  }

  async function succeed(run: Run, m: Extract<WorkerMessage, { type: 'succeeded' }>) {
    const job = run.job;
    // The final step's event gains the full-validation numbers the worker computes at the end.
    recordStep(job.id, m.metrics, run.totalSteps);
    const finalModel = `${modelPrefix(job)}${randomAlnum(8)}`;
    const adapterDir = storedDir(run, m.dir);
    const csv = stepMetricsCsv(jobs.stepMetrics(job.id), job.method);
    const fileId = newId('file-');
    await blobs.write(fileId, csv);
    const dropped: string[] = [];
    const done = jobs.transaction(() => {
      const now = nowSeconds();
      const row = tryTransition(jobs, job.id, 'succeed', { message: `New fine-tuned model created: ${finalModel}` }, {
        fine_tuned_model: finalModel, finished_at: now, trained_tokens: m.trainedTokens, estimated_finish: null, result_file: fileId,
      });
      if (!row) return false; // cancelled while the last step finished
      files.insert({
        id: fileId, project: job.project, bytes: Buffer.byteLength(csv), created_at: now, expires_at: null,
        filename: 'step_metrics.csv', purpose: 'fine-tune-results', status: 'processed', status_details: null,
      });
      models.insert({ id: finalModel, project: job.project, base_model: job.base_model, adapter_dir: adapterDir, job_id: job.id, step: null, created_at: now });
      // As on the hosted service, the last epoch's checkpoint is the final model itself.
      const last = jobs.checkpoints(job.id).at(-1);
      if (last && last.step_number === m.metrics.step) {
        const ckptModel = models.get(job.project, last.fine_tuned_model_checkpoint);
        jobs.renameCheckpointModel(last.id, finalModel);
        if (ckptModel) {
          models.delete(job.project, ckptModel.id);
          if (ckptModel.adapter_dir !== adapterDir) dropped.push(ckptModel.adapter_dir);
        }
      }
      jobs.addEvent(job.id, { message: 'The job has successfully completed' });
      return true;
    });
    if (!done) await blobs.remove(fileId);
    for (const dir of dropped) rmSync(resolve(dataDir, dir), { recursive: true, force: true });
    crashes.delete(job.id);
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

  /**
   * Removes the adapter folders of finished jobs that no model is served from any more: a checkpoint pruned, or a model
   * deleted, by a server that stopped before removing its folder. An unfinished job's worker may still report a folder.
   */
  function removeUnusedAdapters() {
    const used = models.adapterDirsInUse();
    for (const job of jobs.inStatus(['succeeded', 'failed', 'cancelled'])) {
      const jobDir = jobDirOf(job.id);
      const checkpoints = join(jobDir, CHECKPOINTS_DIR);
      const candidates = [join(jobDir, FINAL_DIR), ...(existsSync(checkpoints) ? readdirSync(checkpoints).map((name) => join(checkpoints, name)) : [])];
      for (const dir of candidates) if (existsSync(dir) && !used.has(relative(dataDir, dir))) rmSync(dir, { recursive: true, force: true });
    }
  }

  return {
    start() {
      removeUnusedAdapters();
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
      const row = applyTransition(jobs, jobId, 'resume', { message: 'Fine-tuning job resumed, moving job to queued state' }, { queued_at: Date.now() });
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
