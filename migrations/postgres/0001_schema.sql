-- The whole schema on PostgreSQL, equivalent to SQLite's migrations 0001–0007 taken together. `seq` (an identity
-- column) stands where SQLite used the rowid: insertion order, which breaks ties between rows created the same second.
-- Times are unix seconds (BIGINT), except lease_expires_at (unix ms). JSON columns stay TEXT: the code reads and
-- writes them as strings, and the metadata filter casts to jsonb where it needs to.

CREATE TABLE api_keys (
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,
  -- The first characters of the key, shown by `keys list` so a user can tell keys apart.
  key_prefix TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT
);

CREATE TABLE files (
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT,
  filename TEXT NOT NULL,
  purpose TEXT NOT NULL,
  status TEXT NOT NULL,
  status_details TEXT
);

CREATE INDEX files_by_project ON files (project, created_at, seq);

-- Fine-tuned models and checkpoints: each is a servable `ft:` id backed by a LoRA adapter directory.
CREATE TABLE fine_tuned_models (
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  base_model TEXT NOT NULL,
  -- The adapter's key in the shared directories (a path relative to a data directory); never taken from a request.
  adapter_dir TEXT NOT NULL,
  job_id TEXT,
  step INTEGER,
  created_at BIGINT NOT NULL,
  base_precision TEXT NOT NULL DEFAULT 'fp32' CHECK (base_precision IN ('fp32', 'nf4', 'int4', 'int8'))
);

CREATE INDEX fine_tuned_models_by_project ON fine_tuned_models (project, created_at, seq);

CREATE TABLE fine_tuning_jobs (
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('validating_files', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
  model TEXT NOT NULL,
  base_model TEXT NOT NULL,
  start_model TEXT,
  method TEXT NOT NULL CHECK (method IN ('supervised', 'dpo')),
  training_file TEXT NOT NULL,
  validation_file TEXT,
  hyperparameters TEXT NOT NULL,
  resolved_hyperparameters TEXT,
  lora TEXT NOT NULL,
  base_precision TEXT NOT NULL DEFAULT 'fp32' CHECK (base_precision IN ('fp32', 'nf4', 'int4', 'int8')),
  suffix TEXT,
  seed BIGINT NOT NULL,
  metadata TEXT,
  fine_tuned_model TEXT,
  finished_at BIGINT,
  error_code TEXT,
  error_message TEXT,
  error_param TEXT,
  trained_tokens BIGINT,
  total_steps BIGINT,
  estimated_finish BIGINT,
  result_file TEXT,
  -- When the job last entered `queued` (seconds): queued jobs start in this order.
  queued_at BIGINT,
  -- The node validating or training the job, and until when (unix ms) it holds it; NULL while nobody does.
  owner TEXT,
  lease_expires_at BIGINT
);

CREATE INDEX fine_tuning_jobs_by_project ON fine_tuning_jobs (project, created_at, seq);
CREATE INDEX fine_tuning_jobs_by_status ON fine_tuning_jobs (status, queued_at);
CREATE INDEX fine_tuning_jobs_by_owner ON fine_tuning_jobs (owner) WHERE owner IS NOT NULL;

CREATE TABLE fine_tuning_events (
  -- Insertion order: events are listed newest first by seq, and `after` pages by it.
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  job_id TEXT NOT NULL REFERENCES fine_tuning_jobs (id) ON DELETE CASCADE,
  created_at BIGINT NOT NULL,
  level TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
  type TEXT NOT NULL CHECK (type IN ('message', 'metrics')),
  message TEXT NOT NULL,
  data TEXT,
  -- Metrics events only: the optimizer step. One event per step, so a step redone after a crash replaces its event.
  step BIGINT
);

CREATE INDEX fine_tuning_events_by_job ON fine_tuning_events (job_id, seq);
CREATE UNIQUE INDEX fine_tuning_events_one_per_step ON fine_tuning_events (job_id, step) WHERE step IS NOT NULL;

CREATE TABLE fine_tuning_checkpoints (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES fine_tuning_jobs (id) ON DELETE CASCADE,
  created_at BIGINT NOT NULL,
  step_number BIGINT NOT NULL,
  fine_tuned_model_checkpoint TEXT NOT NULL,
  metrics TEXT NOT NULL,
  UNIQUE (job_id, step_number)
);

-- Uploads (the Uploads API): a file sent in parts, assembled into an ordinary File on completion.
CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  filename TEXT NOT NULL,
  mime_type TEXT NOT NULL,
  purpose TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  file_expires_after BIGINT,
  -- 'completing' is internal (the wire says 'pending'); a crash mid-completion is set back to 'pending' at start-up.
  status TEXT NOT NULL CHECK (status IN ('pending', 'completing', 'completed', 'cancelled', 'expired')),
  -- While completing: which node assembles it and since when, so a restarting node resets only its own cut-off
  -- completions (or ones abandoned for an hour), never one another node is assembling right now.
  completing_node TEXT,
  completing_since BIGINT
);

CREATE INDEX uploads_by_status ON uploads (status, expires_at);

CREATE TABLE upload_parts (
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  upload_id TEXT NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
  bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE INDEX upload_parts_by_upload ON upload_parts (upload_id);

-- Blob contents (what SQLite's engine keeps as files under the data directory), in 1 MiB chunks so that a blob is
-- streamed in and out and never held whole in memory. A blob row exists only once all its chunks are in: both are
-- written in one transaction. `kind` separates the namespaces (uploaded files, upload parts, published directories).
CREATE TABLE blobs (
  kind TEXT NOT NULL CHECK (kind IN ('files', 'upload-parts', 'dirs')),
  id TEXT NOT NULL,
  bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  -- The node that wrote it: start-up recovery removes only its own orphans (another node's may be about to get their row).
  node TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);

CREATE TABLE blob_chunks (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  n INTEGER NOT NULL,
  data BYTEA NOT NULL,
  PRIMARY KEY (kind, id, n),
  FOREIGN KEY (kind, id) REFERENCES blobs (kind, id) ON DELETE CASCADE
);

-- Directories one node makes and others read (adapters, resume points), published as a tar blob of kind 'dirs'.
-- A new publish of the same key replaces the blob; nodes compare the blob id with the one they extracted last.
CREATE TABLE shared_dirs (
  key TEXT PRIMARY KEY,
  blob_id TEXT NOT NULL,
  published_at BIGINT NOT NULL
);
