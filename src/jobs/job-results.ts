// What a job's training produces, recorded in the database: worker messages become events, checkpoints, models (named
// `ft:…`), the step-metrics result file and the final status; adapters and resume points are published to the other
// nodes; superseded checkpoints are pruned, and start-up removes adapter folders a crash left behind.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { newId, nowSeconds, randomAlnum } from '../store/ids.ts';
import type { JobRow, Store } from '../store/store.ts';
import { tryTransition } from './lifecycle.ts';
import type { ModelCatalog } from './model-catalog.ts';
import { stepMetricsCsv } from './result-file.ts';
import { RESUME_DIR } from './worker/resume-point.ts';
import { CHECKPOINTS_DIR, FINAL_DIR, type StepMetrics, type WorkerMessage } from './worker-protocol.ts';

/** Kept per job, as the hosted service keeps the last three epochs' checkpoints. */
export const CHECKPOINTS_KEPT = 3;

/** What the recorder needs to know of one worker run (the scheduler owns it; `started` updates it). */
export interface RunProgress {
  job: JobRow;
  /** The job's folder, under which the worker names its adapter folders. */
  jobDir: string;
  totalSteps: number | null;
  /** Where this worker started (for the step rate behind estimated_finish). */
  startStep: number;
  startedAt: number;
}

export interface JobError {
  code: string;
  message: string;
  param?: string | null;
}

export interface JobResults {
  /** The job's folder under the data dir. */
  jobDirOf(jobId: string): string;
  /** The key (in `store.dirs`) of the job's resume point folder: published by the node training it, fetched by one taking it over. */
  resumeKeyOf(jobId: string): string;
  /** Records one worker message. `serverClosing`: a `shutdown` stop is the server's own, not a stop signal sent to the worker alone. */
  record(run: RunProgress, message: WorkerMessage, serverClosing: boolean): Promise<void>;
  /** Fails the job (unless it already left the statuses that can fail) with its error and event. */
  fail(jobId: string, error: JobError): Promise<void>;
  /**
   * Removes the adapter folders of finished jobs that no model is served from any more: a checkpoint pruned, or a model
   * deleted, by a server that stopped before removing its folder. An unfinished job's worker may still report a folder.
   */
  removeUnusedAdapters(): Promise<void>;
}

export function createJobResults(o: { store: Store; dataDir: string; catalog: ModelCatalog }): JobResults {
  const { jobs, blobs } = o.store;
  const dataDir = resolve(o.dataDir);

  const jobDirOf = (jobId: string) => join(dataDir, 'jobs', jobId);
  const resumeKeyOf = (jobId: string) => join('jobs', jobId, RESUME_DIR);
  /** `ft:<base>:<org>:<suffix>:` — the fixed part of every model id a job makes; ':' in a suffix would break parsing. */
  const modelPrefix = (job: JobRow) => `ft:${job.base_model}:${job.project}:${(job.suffix ?? '').replace(/[^A-Za-z0-9._-]/g, '-')}:`;

  async function fail(jobId: string, error: JobError) {
    await tryTransition(jobs, jobId, 'fail', { level: 'error', message: `Fine-tuning job failed: ${error.message}` }, {
      error_code: error.code, error_message: error.message, error_param: error.param ?? null, finished_at: nowSeconds(), estimated_finish: null,
    });
  }

  function recordStep(jobId: string, metrics: StepMetrics, totalSteps: number | null): Promise<void> {
    const total = totalSteps ?? metrics.step;
    const parts = [`training loss=${metrics.train_loss.toFixed(2)}`];
    if (metrics.valid_loss !== undefined) parts.push(`validation loss=${metrics.valid_loss.toFixed(2)}`);
    if (metrics.full_valid_loss !== undefined) parts.push(`full validation loss=${metrics.full_valid_loss.toFixed(2)}`);
    if (metrics.train_reward_accuracy !== undefined) parts.push(`reward accuracy=${metrics.train_reward_accuracy.toFixed(2)}, reward margin=${metrics.train_reward_margin!.toFixed(2)}`);
    return jobs.putMetricsEvent(jobId, metrics.step, `Step ${metrics.step}/${total}: ${parts.join(', ')}`, { ...metrics, total_steps: total });
  }

  async function checkpoint(run: RunProgress, m: Extract<WorkerMessage, { type: 'checkpoint' }>) {
    const job = run.job;
    const model = `${modelPrefix(job)}${randomAlnum(8)}:ckpt-step-${m.step}`;
    const adapterDir = o.catalog.storedAdapterDir(m.dir, run.jobDir);
    // Every node that serves the model reads the folder from where it was published.
    await o.store.dirs.publish(adapterDir);
    const dropped = await o.store.transaction(async (tx) => {
      const created = nowSeconds();
      const removed: string[] = [];
      // An epoch end redone after a crash already has its checkpoint.
      if (!(await tx.jobs.insertCheckpoint({ id: newId('ftckpt_'), job_id: job.id, created_at: created, step_number: m.step, fine_tuned_model_checkpoint: model, metrics: JSON.stringify(m.metrics) }))) return removed;
      await tx.models.insert({ id: model, project: job.project, base_model: job.base_model, adapter_dir: adapterDir, job_id: job.id, step: m.step, created_at: created, base_precision: job.base_precision });
      await tx.jobs.addEvent(job.id, { message: `Checkpoint created at step ${m.step} with Snapshot ID: ${model}` });
      const all = await tx.jobs.checkpoints(job.id);
      for (const old of all.slice(0, Math.max(0, all.length - CHECKPOINTS_KEPT))) {
        const row = await tx.models.get(job.project, old.fine_tuned_model_checkpoint);
        await tx.jobs.deleteCheckpoint(old.id);
        if (row) {
          await tx.models.delete(job.project, row.id);
          removed.push(row.adapter_dir);
        }
      }
      return removed;
    });
    await o.catalog.removeUnusedAdapterDirs(dropped);
  }

  async function succeed(run: RunProgress, m: Extract<WorkerMessage, { type: 'succeeded' }>) {
    const job = run.job;
    // The final step's event gains the full-validation numbers the worker computes at the end.
    await recordStep(job.id, m.metrics, run.totalSteps);
    const finalModel = `${modelPrefix(job)}${randomAlnum(8)}`;
    const adapterDir = o.catalog.storedAdapterDir(m.dir, run.jobDir);
    await o.store.dirs.publish(adapterDir);
    const csv = stepMetricsCsv(await jobs.stepMetrics(job.id), job.method);
    const fileId = newId('file-');
    const outcome = await o.store.transaction(async (tx) => {
      const now = nowSeconds();
      const dropped: string[] = [];
      // Inside the transaction that inserts its row: a server starting on a SQLite data directory this worker shares
      // recovers file storage in a transaction too, so it never takes this blob, a moment before its row, for an orphan.
      await tx.blobs.write(fileId, csv);
      const row = await tryTransition(tx.jobs, job.id, 'succeed', { message: `New fine-tuned model created: ${finalModel}` }, {
        fine_tuned_model: finalModel, finished_at: now, trained_tokens: m.trainedTokens, estimated_finish: null, result_file: fileId,
      });
      if (!row) return { done: false, dropped }; // cancelled while the last step finished
      await tx.files.insert({
        id: fileId, project: job.project, bytes: Buffer.byteLength(csv), created_at: now, expires_at: null,
        filename: 'step_metrics.csv', purpose: 'fine-tune-results', status: 'processed', status_details: null,
      });
      await tx.models.insert({ id: finalModel, project: job.project, base_model: job.base_model, adapter_dir: adapterDir, job_id: job.id, step: null, created_at: now, base_precision: job.base_precision });
      // As on the hosted service, the last epoch's checkpoint is the final model itself.
      const last = (await tx.jobs.checkpoints(job.id)).at(-1);
      if (last && last.step_number === m.metrics.step) {
        const ckptModel = await tx.models.get(job.project, last.fine_tuned_model_checkpoint);
        await tx.jobs.renameCheckpointModel(last.id, finalModel);
        if (ckptModel) {
          await tx.models.delete(job.project, ckptModel.id);
          dropped.push(ckptModel.adapter_dir);
        }
      }
      await tx.jobs.addEvent(job.id, { message: 'The job has successfully completed' });
      return { done: true, dropped };
    });
    if (!outcome.done) await blobs.remove(fileId);
    await o.catalog.removeUnusedAdapterDirs(outcome.dropped);
  }

  return {
    jobDirOf,
    resumeKeyOf,
    fail,
    async record(run, m, serverClosing) {
      const id = run.job.id;
      switch (m.type) {
        case 'started': {
          run.totalSteps = m.totalSteps;
          run.startStep = m.resumedFromStep;
          run.startedAt = Date.now();
          await jobs.update(id, ['running', 'paused'], { total_steps: m.totalSteps });
          if (m.resumedFromStep > 0) await jobs.addEvent(id, { message: `Resumed training at step ${m.resumedFromStep}/${m.totalSteps} on ${m.device}`, data: run.job.owner ? { node: run.job.owner } : undefined });
          return;
        }
        case 'step': {
          await recordStep(id, m.metrics, run.totalSteps);
          const perStep = (Date.now() - run.startedAt) / 1000 / Math.max(1, m.metrics.step - run.startStep);
          const remaining = (run.totalSteps ?? m.metrics.step) - m.metrics.step;
          await jobs.update(id, ['running', 'paused'], { trained_tokens: m.trainedTokens });
          await jobs.update(id, ['running'], { estimated_finish: Math.round(Date.now() / 1000 + perStep * remaining) });
          return;
        }
        case 'checkpoint':
          return checkpoint(run, m);
        case 'resume-point':
          return o.store.dirs.publish(resumeKeyOf(id));
        case 'succeeded':
          return succeed(run, m);
        case 'stopped':
          if (m.reason === 'pause') await jobs.addEvent(id, { message: `Training stopped at step ${m.step}; resuming continues from there` });
          if (m.reason === 'shutdown' && serverClosing) await jobs.addEvent(id, { message: `The server is shutting down: training stopped at step ${m.step} and continues from there at the next start` });
          return;
        case 'warning':
          await jobs.addEvent(id, { level: 'warn', message: m.message });
          return;
        case 'failed':
          return fail(id, { code: m.code, message: m.message, param: m.param ?? null });
      }
    },
    async removeUnusedAdapters() {
      const candidates: string[] = [];
      for (const job of await jobs.inStatus(['succeeded', 'failed', 'cancelled'])) {
        const jobDir = jobDirOf(job.id);
        const checkpoints = join(jobDir, CHECKPOINTS_DIR);
        candidates.push(join(jobDir, FINAL_DIR), ...(existsSync(checkpoints) ? readdirSync(checkpoints).map((name) => join(checkpoints, name)) : []));
      }
      await o.catalog.removeUnusedAdapterDirs(candidates.filter((dir) => existsSync(dir)));
    },
  };
}
