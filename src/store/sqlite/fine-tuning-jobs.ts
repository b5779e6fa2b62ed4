// The fine-tuning tables on SQLite: jobs, their events (lifecycle messages and per-step metrics) and checkpoints.
import type { Db } from './db.ts';
import { CHECKPOINTS, EVENTS, JOB_COLUMNS, JOBS, SETTABLE_JOB_COLUMNS } from '../columns.ts';
import { newId, nowSeconds } from '../ids.ts';
import { page } from '../paging.ts';
import type { CheckpointRow, EventRow, FineTuningJobStore, JobRow, JobStatus, NewEvent } from '../store.ts';


export function fineTuningJobStore(db: Db): FineTuningJobStore {
  const insertJob = db.prepare(`INSERT INTO fine_tuning_jobs (${JOBS}) VALUES (${JOB_COLUMNS.map((c) => '@' + c).join(', ')})`);
  const get = db.prepare(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE project = ? AND id = ?`);
  const getById = db.prepare(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE id = ?`);
  const jobCursor = db.prepare('SELECT created_at, rowid AS seq FROM fine_tuning_jobs WHERE project = ? AND id = ?');
  // A metadata filter is a JSON object; a job matches when each of its pairs is among the job's own.
  const jobPage = db.prepare(`SELECT ${JOBS} FROM fine_tuning_jobs AS j WHERE project = @project
    AND (@created IS NULL OR (created_at, rowid) < (@created, @seq))
    AND (@withoutMetadata = 0 OR metadata IS NULL)
    AND NOT EXISTS (SELECT 1 FROM json_each(@filter) AS f
      WHERE NOT EXISTS (SELECT 1 FROM json_each(j.metadata) AS m WHERE m.key = f.key AND m.value = f.value))
    ORDER BY created_at DESC, rowid DESC LIMIT @limit`);
  const inStatus = db.prepare(`SELECT ${JOBS} FROM fine_tuning_jobs WHERE status IN (SELECT value FROM json_each(?))
    ORDER BY queued_at, created_at, rowid`);
  const countByStatus = db.prepare('SELECT status, COUNT(*) AS n FROM fine_tuning_jobs GROUP BY status');
  // One writer at a time (the caller's transaction holds the write lock), so no row locks are needed to claim safely.
  const claimable = db.prepare(`SELECT ${JOBS} FROM fine_tuning_jobs
    WHERE status IN (SELECT value FROM json_each(@statuses)) AND base_model IN (SELECT value FROM json_each(@baseModels))
      AND (owner IS NULL OR lease_expires_at < @now OR owner = @reclaimFrom)
    ORDER BY queued_at, created_at, rowid LIMIT @limit`);
  const renewLeases = db.prepare(`UPDATE fine_tuning_jobs SET lease_expires_at = @until
    WHERE owner = @owner AND status IN ('validating_files', 'running') RETURNING id, status`);
  const insertEvent = db.prepare(`INSERT INTO fine_tuning_events (${EVENTS}, step)
    VALUES (@id, @job_id, @created_at, @level, @type, @message, @data, @step)`);
  const putMetrics = db.prepare(`INSERT INTO fine_tuning_events (${EVENTS}, step)
    VALUES (@id, @job_id, @created_at, 'info', 'metrics', @message, @data, @step)
    ON CONFLICT (job_id, step) WHERE step IS NOT NULL DO UPDATE SET message = excluded.message, data = excluded.data, created_at = excluded.created_at`);
  const eventCursor = db.prepare('SELECT seq FROM fine_tuning_events WHERE job_id = ? AND id = ?');
  const eventPage = db.prepare(`SELECT ${EVENTS} FROM fine_tuning_events WHERE job_id = @jobId AND (@seq IS NULL OR seq < @seq)
    ORDER BY seq DESC LIMIT @limit`);
  const metrics = db.prepare('SELECT data FROM fine_tuning_events WHERE job_id = ? AND step IS NOT NULL ORDER BY step');
  const insertCheckpoint = db.prepare(`INSERT INTO fine_tuning_checkpoints (${CHECKPOINTS})
    VALUES (@id, @job_id, @created_at, @step_number, @fine_tuned_model_checkpoint, @metrics) ON CONFLICT (job_id, step_number) DO NOTHING`);
  const checkpoints = db.prepare(`SELECT ${CHECKPOINTS} FROM fine_tuning_checkpoints WHERE job_id = ? ORDER BY step_number`);
  const checkpointCursor = db.prepare('SELECT step_number FROM fine_tuning_checkpoints WHERE job_id = ? AND id = ?');
  /** The row a page cursor (`after`) names within a job: null without a cursor, undefined when it names no row of the job. */
  const cursor = <T>(statement: typeof eventCursor, jobId: string, after: string | undefined): T | null | undefined =>
    after === undefined ? null : (statement.get(jobId, after) as T | undefined);
  const checkpointPage = db.prepare(`SELECT ${CHECKPOINTS} FROM fine_tuning_checkpoints WHERE job_id = @jobId
    AND (@step IS NULL OR step_number < @step) ORDER BY step_number DESC LIMIT @limit`);
  const deleteCheckpoint = db.prepare('DELETE FROM fine_tuning_checkpoints WHERE id = ?');
  const renameCheckpoint = db.prepare('UPDATE fine_tuning_checkpoints SET fine_tuned_model_checkpoint = ? WHERE id = ?');

  // One statement per set of columns, prepared on first use; column names come from JobFields, never from a request.
  const updates = new Map<string, ReturnType<Db['prepare']>>();
  const updateStatement = (columns: string[], setsStatus: boolean) => {
    const key = `${setsStatus}:${columns.join(',')}`;
    let s = updates.get(key);
    if (!s) {
      for (const c of columns) if (!SETTABLE_JOB_COLUMNS.has(c)) throw new Error(`fine_tuning_jobs.${c} is not a settable column`);
      const sets = [...(setsStatus ? ['status = @to'] : []), ...columns.map((c) => `${c} = @${c}`)];
      s = db.prepare(`UPDATE fine_tuning_jobs SET ${sets.join(', ')} WHERE id = @id AND status IN (SELECT value FROM json_each(@from)) RETURNING ${JOBS}`);
      updates.set(key, s);
    }
    return s;
  };

  const addEvent = (jobId: string, e: NewEvent, type: 'message' | 'metrics' = 'message', step: number | null = null) =>
    insertEvent.run({
      id: newId('ftevent-'),
      job_id: jobId,
      created_at: nowSeconds(),
      level: e.level ?? 'info',
      type,
      message: e.message,
      data: e.data === undefined || e.data === null ? null : JSON.stringify(e.data),
      step,
    });

  const insert = db.transaction((row: JobRow, events: NewEvent[]) => {
    insertJob.run(row);
    for (const e of events) addEvent(row.id, e);
  });
  const transition = db.transaction((id: string, from: readonly JobStatus[], to: JobStatus, fields: Record<string, unknown>, event: NewEvent) => {
    const row = updateStatement(Object.keys(fields), true).get({ ...fields, id, to, from: JSON.stringify(from) }) as JobRow | undefined;
    if (row) addEvent(id, event);
    return row;
  });

  return {
    insert: async (row, events) => insert(row, events),
    get: async (project, id) => get.get(project, id) as JobRow | undefined,
    getById: async (id) => getById.get(id) as JobRow | undefined,
    async list(project, q) {
      let position: { created_at: number | null; seq: number | null } = { created_at: null, seq: null };
      if (q.after !== undefined) {
        const found = jobCursor.get(project, q.after) as { created_at: number; seq: number } | undefined;
        if (!found) return undefined;
        position = found;
      }
      const rows = jobPage.all({
        project,
        created: position.created_at,
        seq: position.seq,
        withoutMetadata: q.metadata === null ? 1 : 0,
        filter: JSON.stringify(q.metadata ?? {}),
        limit: q.limit + 1,
      }) as JobRow[];
      return page(rows, q.limit);
    },
    inStatus: async (statuses) => inStatus.all(JSON.stringify(statuses)) as JobRow[],
    countByStatus: async () => Object.fromEntries((countByStatus.all() as { status: JobStatus; n: number }[]).map((r) => [r.status, r.n])),
    async lockClaimable(q) {
      if (!db.inTransaction) throw new Error('lockClaimable must run inside Store.transaction');
      return claimable.all({
        statuses: JSON.stringify(q.statuses), baseModels: JSON.stringify(q.baseModels), now: q.now, limit: q.limit, reclaimFrom: q.reclaimFrom ?? null,
      }) as JobRow[];
    },
    renewLeases: async (owner, until) => renewLeases.all({ owner, until }) as { id: string; status: JobStatus }[],
    transition: async (id, from, to, fields, event) => transition(id, from, to, fields, event),
    async update(id, when, fields) {
      return updateStatement(Object.keys(fields), false).get({ ...fields, id, from: JSON.stringify(when) }) !== undefined;
    },
    addEvent: async (jobId, e) => void addEvent(jobId, e),
    putMetricsEvent: async (jobId, step, message, data) =>
      void putMetrics.run({ id: newId('ftevent-'), job_id: jobId, created_at: nowSeconds(), message, data: JSON.stringify(data), step }),
    async listEvents(jobId, q) {
      const position = cursor<{ seq: number }>(eventCursor, jobId, q.after);
      if (position === undefined) return undefined;
      return page(eventPage.all({ jobId, seq: position?.seq ?? null, limit: q.limit + 1 }) as EventRow[], q.limit);
    },
    stepMetrics: async (jobId) => (metrics.all(jobId) as { data: string }[]).map((r) => JSON.parse(r.data) as Record<string, number>),
    insertCheckpoint: async (row) => insertCheckpoint.run(row).changes === 1,
    checkpoints: async (jobId) => checkpoints.all(jobId) as CheckpointRow[],
    async listCheckpoints(jobId, q) {
      const position = cursor<{ step_number: number }>(checkpointCursor, jobId, q.after);
      if (position === undefined) return undefined;
      return page(checkpointPage.all({ jobId, step: position?.step_number ?? null, limit: q.limit + 1 }) as CheckpointRow[], q.limit);
    },
    deleteCheckpoint: async (id) => void deleteCheckpoint.run(id),
    renameCheckpointModel: async (id, model) => void renameCheckpoint.run(model, id),
  };
}
