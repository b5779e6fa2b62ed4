// The fine-tuning tables on PostgreSQL: jobs (and the queue nodes claim them from), their events and checkpoints.
import type { CheckpointRow, EventRow, FineTuningJobStore, JobRow, JobStatus, NewEvent } from '../store.ts';
import { CHECKPOINTS, EVENTS, JOB_COLUMNS, JOBS, SETTABLE_JOB_COLUMNS } from '../columns.ts';
import { newId, nowSeconds } from '../ids.ts';
import type { Db } from './db.ts';
import { page } from '../paging.ts';

// The statuses in which a node works on a job it holds, and so keeps its lease.
const HELD: readonly JobStatus[] = ['validating_files', 'running'];
// Queued jobs start oldest first; SQLite sorts a NULL queued_at first, and so must this engine.
const QUEUE_ORDER = 'ORDER BY queued_at ASC NULLS FIRST, created_at, seq';

export function fineTuningJobStore(db: Db): FineTuningJobStore {
  const addEvent = (tx: Db, jobId: string, e: NewEvent) =>
    tx.query(`INSERT INTO fine_tuning_events (${EVENTS}) VALUES ($1, $2, $3, $4, 'message', $5, $6)`, [
      newId('ftevent-'), jobId, nowSeconds(), e.level ?? 'info', e.message,
      e.data === undefined || e.data === null ? null : JSON.stringify(e.data),
    ]);

  // Sets `fields` (and the status, when `to` is given) if the status is one of `from`; column names come from
  // JobFields, never from a request, and are checked against the table's.
  const setFields = async (tx: Db, id: string, from: readonly JobStatus[], to: JobStatus | undefined, fields: Record<string, unknown>) => {
    const columns = Object.keys(fields);
    for (const c of columns) if (!SETTABLE_JOB_COLUMNS.has(c)) throw new Error(`fine_tuning_jobs.${c} is not a settable column`);
    const params: unknown[] = [id, [...from]];
    const sets = columns.map((c) => `${c} = $${params.push(fields[c])}`);
    if (to !== undefined) sets.unshift(`status = $${params.push(to)}`);
    // Nothing to set still has to answer whether the status allowed it.
    if (sets.length === 0) sets.push('status = status');
    const r = await tx.query<JobRow>(`UPDATE fine_tuning_jobs SET ${sets.join(', ')} WHERE id = $1 AND status = ANY($2::text[]) RETURNING ${JOBS}`, params);
    return r.rows[0];
  };

  const cursor = async <T>(sql: string, params: unknown[], after: string | undefined): Promise<T | null | undefined> => {
    if (after === undefined) return null;
    return (await db.query<T & object>(sql, params)).rows[0];
  };

  return {
    insert: (row, events) => db.transaction(async (tx) => {
      const values = JOB_COLUMNS.map((c) => row[c]);
      await tx.query(`INSERT INTO fine_tuning_jobs (${JOBS}) VALUES (${JOB_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})`, values);
      for (const e of events) await addEvent(tx, row.id, e);
    }),
    async get(project, id) {
      return (await db.query<JobRow>(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE project = $1 AND id = $2`, [project, id])).rows[0];
    },
    async getById(id) {
      return (await db.query<JobRow>(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE id = $1`, [id])).rows[0];
    },
    async list(project, q) {
      const position = await cursor<{ created_at: number; seq: number }>(
        'SELECT created_at, seq FROM fine_tuning_jobs WHERE project = $1 AND id = $2', [project, q.after], q.after);
      if (position === undefined) return undefined;
      // A metadata filter is a JSON object of strings; a job matches when each of its pairs is among the job's own.
      const r = await db.query<JobRow>(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE project = $1
        AND ($2::bigint IS NULL OR (created_at, seq) < ($2, $3))
        AND (NOT $4::boolean OR metadata IS NULL)
        AND ($5::jsonb = '{}'::jsonb OR metadata::jsonb @> $5::jsonb)
        ORDER BY created_at DESC, seq DESC LIMIT $6`,
      [project, position?.created_at ?? null, position?.seq ?? null, q.metadata === null, JSON.stringify(q.metadata ?? {}), q.limit + 1]);
      return page(r.rows, q.limit);
    },
    async inStatus(statuses) {
      return (await db.query<JobRow>(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE status = ANY($1::text[]) ${QUEUE_ORDER}`, [[...statuses]])).rows;
    },
    async countByStatus() {
      const r = await db.query<{ status: JobStatus; n: number }>('SELECT status, COUNT(*) AS n FROM fine_tuning_jobs GROUP BY status');
      return Object.fromEntries(r.rows.map((row) => [row.status, row.n]));
    },
    async lockClaimable(q) {
      // Outside a transaction the row locks would end with the statement, and two nodes could take one job.
      if (!db.inTransaction) throw new Error('lockClaimable must run inside Store.transaction');
      // SKIP LOCKED: rows another node's open claim holds are passed over, not waited for, so two claims never overlap.
      return (await db.query<JobRow>(`SELECT ${JOBS} FROM fine_tuning_jobs
        WHERE status = ANY($1::text[]) AND base_model = ANY($2::text[])
          AND (owner IS NULL OR lease_expires_at < $3 OR owner = $4)
        ${QUEUE_ORDER} LIMIT $5 FOR UPDATE SKIP LOCKED`,
      [[...q.statuses], [...q.baseModels], q.now, q.reclaimFrom ?? null, q.limit])).rows;
    },
    async renewLeases(owner, until) {
      return (await db.query<{ id: string; status: JobStatus }>(`UPDATE fine_tuning_jobs SET lease_expires_at = $2
        WHERE owner = $1 AND status = ANY($3::text[]) RETURNING id, status`, [owner, until, [...HELD]])).rows;
    },
    transition: (id, from, to, fields, event) => db.transaction(async (tx) => {
      const row = await setFields(tx, id, from, to, fields);
      if (row) await addEvent(tx, id, event);
      return row;
    }),
    async update(id, when, fields) {
      return (await setFields(db, id, when, undefined, fields)) !== undefined;
    },
    async addEvent(jobId, e) {
      await addEvent(db, jobId, e);
    },
    async putMetricsEvent(jobId, step, message, data) {
      await db.query(`INSERT INTO fine_tuning_events (${EVENTS}, step) VALUES ($1, $2, $3, 'info', 'metrics', $4, $5, $6)
        ON CONFLICT (job_id, step) WHERE step IS NOT NULL
        DO UPDATE SET message = excluded.message, data = excluded.data, created_at = excluded.created_at`,
      [newId('ftevent-'), jobId, nowSeconds(), message, JSON.stringify(data), step]);
    },
    async listEvents(jobId, q) {
      const position = await cursor<{ seq: number }>('SELECT seq FROM fine_tuning_events WHERE job_id = $1 AND id = $2', [jobId, q.after], q.after);
      if (position === undefined) return undefined;
      const r = await db.query<EventRow>(`SELECT ${EVENTS} FROM fine_tuning_events WHERE job_id = $1 AND ($2::bigint IS NULL OR seq < $2)
        ORDER BY seq DESC LIMIT $3`, [jobId, position?.seq ?? null, q.limit + 1]);
      return page(r.rows, q.limit);
    },
    async stepMetrics(jobId) {
      const r = await db.query<{ data: string }>('SELECT data FROM fine_tuning_events WHERE job_id = $1 AND step IS NOT NULL ORDER BY step', [jobId]);
      return r.rows.map((row) => JSON.parse(row.data) as Record<string, number>);
    },
    async insertCheckpoint(row) {
      return (await db.query(`INSERT INTO fine_tuning_checkpoints (${CHECKPOINTS}) VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (job_id, step_number) DO NOTHING`,
      [row.id, row.job_id, row.created_at, row.step_number, row.fine_tuned_model_checkpoint, row.metrics])).rowCount === 1;
    },
    async checkpoints(jobId) {
      return (await db.query<CheckpointRow>(`SELECT ${CHECKPOINTS} FROM fine_tuning_checkpoints WHERE job_id = $1 ORDER BY step_number`, [jobId])).rows;
    },
    async listCheckpoints(jobId, q) {
      const position = await cursor<{ step_number: number }>(
        'SELECT step_number FROM fine_tuning_checkpoints WHERE job_id = $1 AND id = $2', [jobId, q.after], q.after);
      if (position === undefined) return undefined;
      const r = await db.query<CheckpointRow>(`SELECT ${CHECKPOINTS} FROM fine_tuning_checkpoints WHERE job_id = $1
        AND ($2::bigint IS NULL OR step_number < $2) ORDER BY step_number DESC LIMIT $3`, [jobId, position?.step_number ?? null, q.limit + 1]);
      return page(r.rows, q.limit);
    },
    async deleteCheckpoint(id) {
      await db.query('DELETE FROM fine_tuning_checkpoints WHERE id = $1', [id]);
    },
    async renameCheckpointModel(id, model) {
      await db.query('UPDATE fine_tuning_checkpoints SET fine_tuned_model_checkpoint = $1 WHERE id = $2', [model, id]);
    },
  };
}
