// The job state machine: the one table of allowed transitions, each applied as one transaction with its event.
import type { FineTuningJobStore, JobFields, JobRow, JobStatus, NewEvent } from '../store/store.ts';

/**
 * Every status change a job can make, and from where. `validating_files → queued → running → succeeded | failed |
 * cancelled`, plus `paused`. A pause or cancel that arrives while the worker finishes its last step can still meet
 * that worker's `succeeded` or `failed`, so those leave `paused` too; a cancelled job stays cancelled.
 */
export const TRANSITIONS = {
  validated: { from: ['validating_files'], to: 'queued' },
  start: { from: ['queued'], to: 'running' },
  succeed: { from: ['running', 'paused'], to: 'succeeded' },
  fail: { from: ['validating_files', 'queued', 'running', 'paused'], to: 'failed' },
  cancel: { from: ['validating_files', 'queued', 'running', 'paused'], to: 'cancelled' },
  pause: { from: ['queued', 'running'], to: 'paused' },
  resume: { from: ['paused'], to: 'queued' },
} as const satisfies Record<string, { from: readonly JobStatus[]; to: JobStatus }>;

export type TransitionName = keyof typeof TRANSITIONS;

/** A state change the job's status does not allow (the HTTP layer answers 400, never 409). */
export class TransitionRefused extends Error {
  constructor(readonly jobId: string, readonly transition: TransitionName, readonly status: JobStatus) {
    const allowed = TRANSITIONS[transition].from;
    super(`Cannot ${transition} fine-tuning job ${jobId}: its status is ${status} (${transition} is allowed from ${allowed.join(', ')}).`);
  }
}

/**
 * Applies transition `name` with its event and field changes in one transaction. Throws TransitionRefused when
 * the job's current status does not allow it (the row is read again, so the message names the real status).
 */
export async function applyTransition(store: FineTuningJobStore, jobId: string, name: TransitionName, event: NewEvent, fields: JobFields = {}): Promise<JobRow> {
  const row = await tryTransition(store, jobId, name, event, fields);
  if (row) return row;
  const current = await store.getById(jobId);
  if (!current) throw new Error(`fine-tuning job ${jobId} does not exist`);
  throw new TransitionRefused(jobId, name, current.status);
}

/** Like applyTransition, but a refusal (the job moved on meanwhile, e.g. cancelled during validation) returns undefined. */
export function tryTransition(store: FineTuningJobStore, jobId: string, name: TransitionName, event: NewEvent, fields: JobFields = {}): Promise<JobRow | undefined> {
  const t = TRANSITIONS[name];
  return store.transition(jobId, t.from, t.to, fields, event);
}
