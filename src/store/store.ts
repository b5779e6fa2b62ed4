// The store: every table and blob localtune keeps, as one interface that both engines implement — embedded SQLite (one
// data directory, the default) and PostgreSQL (many servers and workers sharing one database). Nothing outside store/
// knows which engine it talks to.
import type { Readable } from 'node:stream';

export type FilePurpose = 'assistants' | 'assistants_output' | 'batch' | 'batch_output' | 'fine-tune' | 'fine-tune-results' | 'vision' | 'user_data' | 'evals';
export type BasePrecision = 'fp32' | 'nf4' | 'int4' | 'int8';

export interface Page<T> {
  rows: T[];
  hasMore: boolean;
}

// ---- files ----

export interface FileRow {
  id: string;
  project: string;
  bytes: number;
  created_at: number;
  expires_at: number | null;
  filename: string;
  purpose: FilePurpose;
  status: 'uploaded' | 'processed' | 'error';
  status_details: string | null;
}

export interface FileListQuery {
  purpose?: string;
  limit: number;
  order: 'asc' | 'desc';
  /** Id of the last file of the previous page. */
  after?: string;
}

export interface FileStore {
  insert(row: FileRow): Promise<void>;
  /** The file if it exists in `project` and has not expired. */
  get(project: string, id: string): Promise<FileRow | undefined>;
  /** One page, ordered by created_at (then insertion); undefined when `after` is not a file of the project. */
  list(project: string, query: FileListQuery): Promise<Page<FileRow> | undefined>;
  /** Removes the row; false when there was none in `project`. */
  delete(project: string, id: string): Promise<boolean>;
  /** Deletes rows whose expires_at has passed, except files an unfinished job uses; returns their ids so the blobs can go too. */
  deleteExpired(): Promise<string[]>;
  /** Whether any row (any project) has this id: used to find stray blobs at start-up. */
  exists(id: string): Promise<boolean>;
}

// ---- uploads (the Uploads API) ----

/** `completing` is ours: the wire shows it as `pending`. */
export type UploadStatus = 'pending' | 'completing' | 'completed' | 'cancelled' | 'expired';

export interface UploadRow {
  id: string;
  project: string;
  bytes: number;
  filename: string;
  mime_type: string;
  purpose: FilePurpose;
  created_at: number;
  expires_at: number;
  /** `expires_after.seconds` for the File the upload becomes, or null. */
  file_expires_after: number | null;
  status: UploadStatus;
}

export interface UploadPartRow {
  id: string;
  upload_id: string;
  bytes: number;
  created_at: number;
}

export interface UploadStore {
  insert(row: UploadRow): Promise<void>;
  /** The upload if it exists in `project`; a pending one past `expires_at` reads as `expired` even before the sweep marks it. */
  get(project: string, id: string): Promise<UploadRow | undefined>;
  /** Records a part whose blob is already stored; false (nothing recorded) unless the upload is pending and unexpired. */
  addPart(part: UploadPartRow): Promise<boolean>;
  /** The upload's parts, oldest first. */
  parts(uploadId: string): Promise<UploadPartRow[]>;
  /** pending (and unexpired) → completing; false when the upload was in any other state. */
  beginCompletion(id: string): Promise<boolean>;
  /** completing → pending, after a completion that failed. */
  abortCompletion(id: string): Promise<void>;
  /**
   * completing → completed in one transaction with inserting the File it became (so neither exists without the
   * other). Returns the ids of the parts it removed, whose blobs the caller deletes.
   */
  finishCompletion(id: string, file: FileRow): Promise<string[]>;
  /** pending → cancelled, removing its parts; undefined when the upload was not pending, else the removed part ids. */
  cancel(id: string): Promise<string[] | undefined>;
  /**
   * Marks pending uploads past their expiry as expired and removes the parts of every upload that is no longer
   * pending (left by a crash between a state change and the blob removal). Returns the removed part ids.
   */
  sweep(): Promise<string[]>;
  /** Start-up: completions a crash cut off go back to pending (their half-assembled temp file is gone). Returns how many. */
  resetInterruptedCompletions(): Promise<number>;
  /** Whether any part (any upload) has this id: used to find stray part blobs at start-up. */
  partExists(id: string): Promise<boolean>;
}

// ---- fine-tuning jobs, events, checkpoints ----

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
  /** The frozen base's precision (`auto` resolved at creation). */
  base_precision: BasePrecision;
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
  /** Unix seconds when the job last entered `queued` (queued jobs start oldest first). */
  queued_at: number | null;
  /** The node (a `serve` or `worker` process) validating or training the job; null while nobody holds it. */
  owner: string | null;
  /** Unix milliseconds until which `owner` holds the job; the owner renews it while alive, another node takes the job over after it. */
  lease_expires_at: number | null;
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

export interface ClaimQuery {
  statuses: readonly JobStatus[];
  /** Only jobs on these base models (the ones this node has). */
  baseModels: readonly string[];
  /** Unix ms: a job whose lease ended before this is free to take. */
  now: number;
  limit: number;
  /** Also jobs this owner held before (its own restart), whatever their lease says. */
  reclaimFrom?: string;
}

export interface FineTuningJobStore {
  /** Inserts a job with its first events, in one transaction. */
  insert(row: JobRow, events: NewEvent[]): Promise<void>;
  get(project: string, id: string): Promise<JobRow | undefined>;
  /** Any project: for the scheduler, which works on ids it took from the database. */
  getById(id: string): Promise<JobRow | undefined>;
  /** Newest first; undefined when `after` is not a job of the project. */
  list(project: string, query: JobListQuery): Promise<Page<JobRow> | undefined>;
  /** Jobs in one of these statuses, oldest queued (then created) first. */
  inStatus(statuses: readonly JobStatus[]): Promise<JobRow[]>;
  /** How many jobs (all projects) are in each status that has any. */
  countByStatus(): Promise<Partial<Record<JobStatus, number>>>;
  /**
   * Jobs in `statuses` that nobody holds (owner null, or lease ended before `now`), oldest queued (then created)
   * first, locked until the enclosing transaction ends so two nodes never take the same job (PostgreSQL: FOR UPDATE
   * SKIP LOCKED). Call it inside `Store.transaction`, and set `owner`/`lease_expires_at` there.
   */
  lockClaimable(query: ClaimQuery): Promise<JobRow[]>;
  /**
   * Extends to `until` (unix ms) the lease of every job `owner` holds (those validating or running with it as owner) and
   * returns them: a job a node runs that is missing was cancelled, paused or taken over through another node.
   */
  renewLeases(owner: string, until: number): Promise<{ id: string; status: JobStatus }[]>;
  /**
   * Moves the job to `to` if its status is one of `from`, setting `fields` and adding `event`, all in one
   * transaction. Returns the updated row, or undefined (and changes nothing) when the status did not allow it.
   */
  transition(id: string, from: readonly JobStatus[], to: JobStatus, fields: JobFields, event: NewEvent): Promise<JobRow | undefined>;
  /** Sets fields without changing the status, if the status is one of `when`. Returns whether it did. */
  update(id: string, when: readonly JobStatus[], fields: JobFields): Promise<boolean>;
  addEvent(jobId: string, event: NewEvent): Promise<void>;
  /** The metrics event of one step; a step reported again (redone after a crash) replaces its event. */
  putMetricsEvent(jobId: string, step: number, message: string, data: Record<string, unknown>): Promise<void>;
  /** Newest first; undefined when `after` is not an event of the job. */
  listEvents(jobId: string, query: { after?: string; limit: number }): Promise<Page<EventRow> | undefined>;
  /** The data of every metrics event, by step. */
  stepMetrics(jobId: string): Promise<Record<string, number>[]>;
  /** Inserts a checkpoint unless the job already has one at that step (a redone epoch end). Returns whether it did. */
  insertCheckpoint(row: CheckpointRow): Promise<boolean>;
  /** Oldest step first. */
  checkpoints(jobId: string): Promise<CheckpointRow[]>;
  /** Highest step first; undefined when `after` is not a checkpoint of the job. */
  listCheckpoints(jobId: string, query: { after?: string; limit: number }): Promise<Page<CheckpointRow> | undefined>;
  deleteCheckpoint(id: string): Promise<void>;
  renameCheckpointModel(id: string, model: string): Promise<void>;
}

// ---- fine-tuned models ----

export interface FineTunedModelRow {
  id: string;
  project: string;
  base_model: string;
  /** The adapter's key in the shared directories (`Store.dirs`): a path relative to the data directory. */
  adapter_dir: string;
  job_id: string | null;
  step: number | null;
  created_at: number;
  /** The base precision the adapter was trained on, and is served on. */
  base_precision: BasePrecision;
}

export interface FineTunedModelStore {
  insert(row: FineTunedModelRow): Promise<void>;
  /** The model if it exists in `project`. */
  get(project: string, id: string): Promise<FineTunedModelRow | undefined>;
  /** All of a project's models, oldest first. */
  list(project: string): Promise<FineTunedModelRow[]>;
  /** Removes the row; false when there was none in `project`. */
  delete(project: string, id: string): Promise<boolean>;
  /** Every adapter directory some model of any project is served from. */
  adapterDirsInUse(): Promise<Set<string>>;
}

// ---- API keys ----

export interface ApiKeyRow {
  id: string;
  project: string;
  key_prefix: string;
  created_at: number;
  revoked_at: number | null;
}

export interface ApiKeyStore {
  /** Makes a key for `project`; the plaintext is returned here once and never stored. */
  create(project: string): Promise<{ key: string; row: ApiKeyRow }>;
  list(): Promise<ApiKeyRow[]>;
  /** Revokes by key id (`key_…`); false when there is no such active key. */
  revoke(id: string): Promise<boolean>;
  /** The project of an active key, or undefined. */
  projectOf(key: string): Promise<string | undefined>;
  /** Whether any active key exists (no keys means the server runs open, on localhost only). */
  hasActiveKeys(): Promise<boolean>;
}

// ---- blobs ----

/** File contents (uploaded files, result files, upload parts), written whole and durably, then read back. */
export interface BlobStore {
  /** A fresh local path to stream new content into, before `commit`. */
  tempPath(): string;
  /** Makes the finished temp file blob `id`, durably; the temp file is gone afterwards. */
  commit(tempPath: string, id: string): Promise<void>;
  /** Writes `data` as blob `id` durably (for files the server makes itself, like result files). */
  write(id: string, data: string | Uint8Array): Promise<void>;
  /** The blob's bytes as a stream (read lazily, never whole in memory). */
  read(id: string): Readable;
  /** A local file holding blob `id`, for code that reads files itself (validation, the training worker); cached per node. */
  localPath(id: string): Promise<string>;
  remove(id: string): Promise<void>;
  /**
   * Start-up recovery: empties this node's temp folder (uploads cut off by a crash) and removes blobs whose row never
   * got inserted. Returns how many of each it removed.
   */
  recover(isKnown: (id: string) => Promise<boolean>): Promise<{ temp: number; orphans: number }>;
}

/**
 * Directories a node makes and other nodes read: adapters (PEFT folders) and training resume points. Keys are paths
 * relative to the data directory. On SQLite they are the data directory's own folders; on PostgreSQL a node
 * publishes a finished folder to the database and others fetch it into their data directory on first use.
 */
export interface SharedDirs {
  /** The local folder for `key` (it may not exist yet: the caller writes it, then `publish`es it). */
  localDir(key: string): string;
  /** Makes the local folder `key`, as it is now, what every node's `fetch` returns (replacing an earlier version). */
  publish(key: string): Promise<void>;
  /** The local folder for `key`, fetched first if this node lacks it or holds an older version; undefined if nobody published it. */
  fetch(key: string): Promise<string | undefined>;
  /** Removes `key` everywhere (this node's copy and the published one). */
  remove(key: string): Promise<void>;
}

export interface Store {
  files: FileStore;
  uploads: UploadStore;
  jobs: FineTuningJobStore;
  models: FineTunedModelStore;
  keys: ApiKeyStore;
  /** Uploaded and generated files. */
  blobs: BlobStore;
  /** Parts of pending Uploads. */
  parts: BlobStore;
  dirs: SharedDirs;
  /**
   * Runs `fn` in one transaction: everything it does through `tx` commits together or not at all. `fn` must use only
   * `tx` (not this store) and no other I/O, so that the embedded engine's single connection is not shared meanwhile.
   */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
