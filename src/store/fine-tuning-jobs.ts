// The fine-tuning tables: jobs, their events (lifecycle messages and per-step metrics) and checkpoints. All their SQL lives here.
import type { Db } from './db.ts';
import { newId, nowSeconds } from './ids.ts';

export type JobStatus = 'validating_files' | 'queued' | 'running' | 'paused' | 'succeeded' | 'failed' | 'cancelled';

export interface JobRow {
  id: string;
  project: string;
  created_at: number;
  status: JobStatus;
  model: string;
  base_model: string;
  start_model: string | null;
  method: 'supervised' | 'dpo';
  training_file: string;
  validation_file: string | null;
  /** JSON. */
  hyperparameters: string;
  /** JSON, null until the files are validated. */
  resolved_hyperparameters: string | null;
  /** JSON LoraConfig. */
  lora: string;
  suffix: string | null;
  seed: number;
  /** JSON object or null. */
  metadata: string | null;
  fine_tuned_model: string | null;
  finished_at: number | null;
  error_code: string | null;
  error_message: string | null;
  error_param: string | null;
  trained_tokens: number | null;
  total_steps: number | null;
  estimated_finish: number | null;
  result_file: string | null;
  /** Unix seconds when the job last entered `queued` (the scheduler starts queued jobs oldest first). */
  queued_at: number | null;
}

/** The columns a transition or progress update may set (never id, project or status, which have their own rules). */
export type JobFields = Partial<Omit<JobRow, 'id' | 'project' | 'created_at' | 'status'>>;

export interface NewEvent {
  level?: 'info' | 'warn' | 'error';
  message: string;
  /** Metrics events carry the step's numbers; message events carry null. */
  data?: Record<string, unknown> | null;
}

export interface EventRow {
  id: string;
  job_id: string;
  created_at: number;
  level: 'info' | 'warn' | 'error';
  type: 'message' | 'metrics';
  message: string;
  /** JSON or null. */
  data: string | null;
}

export interface CheckpointRow {
  id: string;
  job_id: string;
  created_at: number;
  step_number: number;
  fine_tuned_model_checkpoint: string;
  /** JSON. */
  metrics: string;
}

export interface JobListQuery {
  limit: number;
  /** Id of the last job of the previous page. */
  after?: string;
  /** Every pair must be in the job's metadata; null: only jobs without metadata. */
  metadata?: Record<string, string> | null;
}

export interface Page<T> {
  rows: T[];
  hasMore: boolean;
}

export interface FineTuningJobStore {
  /** Runs `fn` in one transaction (nested calls join the outer one). */
  transaction<T>(fn: () => T): T;
  /** Inserts a job with its first events, in one transaction. */
  insert(row: JobRow, events: NewEvent[]): void;
  get(project: string, id: string): JobRow | undefined;
  /** Any project: for the scheduler, which works on ids it took from the database. */
  getById(id: string): JobRow | undefined;
  /** Newest first; undefined when `after` is not a job of the project. */
  list(project: string, query: JobListQuery): Page<JobRow> | undefined;
  /** Jobs in one of these statuses, oldest queued (then created) first. */
  inStatus(statuses: readonly JobStatus[]): JobRow[];
  /** How many jobs (all projects) are in each status that has any. */
  countByStatus(): Partial<Record<JobStatus, number>>;
  /**
   * Moves the job to `to` if its status is one of `from`, setting `fields` and adding `event`, all in one
   * transaction. Returns the updated row, or undefined (and changes nothing) when the status did not allow it.
   */
  transition(id: string, from: readonly JobStatus[], to: JobStatus, fields: JobFields, event: NewEvent): JobRow | undefined;
  /** Sets fields without changing the status, if the status is one of `when`. Returns whether it did. */
  update(id: string, when: readonly JobStatus[], fields: JobFields): boolean;
  addEvent(jobId: string, event: NewEvent): void;
  /** The metrics event of one step; a step reported again (redone after a crash) replaces its event. */
  putMetricsEvent(jobId: string, step: number, message: string, data: Record<string, unknown>): void;
  /** Newest first; undefined when `after` is not an event of the job. */
  listEvents(jobId: string, query: { after?: string; limit: number }): Page<EventRow> | undefined;
  /** The data of every metrics event, by step. */
  stepMetrics(jobId: string): Record<string, number>[];
  /** Inserts a checkpoint unless the job already has one at that step (a redone epoch end). Returns whether it did. */
  insertCheckpoint(row: CheckpointRow): boolean;
  /** Oldest step first. */
  checkpoints(jobId: string): CheckpointRow[];
  /** Highest step first; undefined when `after` is not a checkpoint of the job. */
  listCheckpoints(jobId: string, query: { after?: string; limit: number }): Page<CheckpointRow> | undefined;
  deleteCheckpoint(id: string): void;
  renameCheckpointModel(id: string, model: string): void;
}

const JOB_COLUMNS = [
  'id', 'project', 'created_at', 'status', 'model', 'base_model', 'start_model', 'method', 'training_file', 'validation_file',
  'hyperparameters', 'resolved_hyperparameters', 'lora', 'suffix', 'seed', 'metadata', 'fine_tuned_model', 'finished_at',
  'error_code', 'error_message', 'error_param', 'trained_tokens', 'total_steps', 'estimated_finish', 'result_file', 'queued_at',
] as const;
const SETTABLE = new Set<string>(JOB_COLUMNS.filter((c) => !['id', 'project', 'created_at', 'status'].includes(c)));
const JOBS = JOB_COLUMNS.join(', ');
const EVENTS = 'id, job_id, created_at, level, type, message, data';
const CHECKPOINTS = 'id, job_id, created_at, step_number, fine_tuned_model_checkpoint, metrics';

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
      for (const c of columns) if (!SETTABLE.has(c)) throw new Error(`fine_tuning_jobs.${c} is not a settable column`);
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

  const page = <T>(rows: T[], limit: number): Page<T> => ({ rows: rows.slice(0, limit), hasMore: rows.length > limit });
  const transaction = <T>(fn: () => T): T => db.transaction(fn)();

  return {
    transaction,
    insert: (row, events) => transaction(() => {
      insertJob.run(row);
      for (const e of events) addEvent(row.id, e);
    }),
    get: (project, id) => get.get(project, id) as JobRow | undefined,
    getById: (id) => getById.get(id) as JobRow | undefined,
    list(project, q) {
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
    inStatus: (statuses) => inStatus.all(JSON.stringify(statuses)) as JobRow[],
    countByStatus: () => Object.fromEntries((countByStatus.all() as { status: JobStatus; n: number }[]).map((r) => [r.status, r.n])),
    transition: (id, from, to, fields, event) => transaction(() => {
      const columns = Object.keys(fields);
      const row = updateStatement(columns, true).get({ ...fields, id, to, from: JSON.stringify(from) }) as JobRow | undefined;
      if (row) addEvent(id, event);
      return row;
    }),
    update(id, when, fields) {
      const columns = Object.keys(fields);
      return updateStatement(columns, false).get({ ...fields, id, from: JSON.stringify(when) }) !== undefined;
    },
    addEvent: (jobId, e) => void addEvent(jobId, e),
    putMetricsEvent: (jobId, step, message, data) =>
      void putMetrics.run({ id: newId('ftevent-'), job_id: jobId, created_at: nowSeconds(), message, data: JSON.stringify(data), step }),
    listEvents(jobId, q) {
      let seq: number | null = null;
      if (q.after !== undefined) {
        const found = eventCursor.get(jobId, q.after) as { seq: number } | undefined;
        if (!found) return undefined;
        seq = found.seq;
      }
      return page(eventPage.all({ jobId, seq, limit: q.limit + 1 }) as EventRow[], q.limit);
    },
    stepMetrics: (jobId) => (metrics.all(jobId) as { data: string }[]).map((r) => JSON.parse(r.data) as Record<string, number>),
    insertCheckpoint: (row) => insertCheckpoint.run(row).changes === 1,
    checkpoints: (jobId) => checkpoints.all(jobId) as CheckpointRow[],
    listCheckpoints(jobId, q) {
      let step: number | null = null;
      if (q.after !== undefined) {
        const found = checkpointCursor.get(jobId, q.after) as { step_number: number } | undefined;
        if (!found) return undefined;
        step = found.step_number;
      }
      return page(checkpointPage.all({ jobId, step, limit: q.limit + 1 }) as CheckpointRow[], q.limit);
    },
    deleteCheckpoint: (id) => void deleteCheckpoint.run(id),
    renameCheckpointModel: (id, model) => void renameCheckpoint.run(model, id),
  };
}
