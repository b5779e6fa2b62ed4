-- Fine-tuning jobs, their events (lifecycle messages and per-step metrics) and their checkpoints.
-- The models a job makes (final and checkpoints) are rows of fine_tuned_models, so serving finds them.

CREATE TABLE fine_tuning_jobs (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('validating_files', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
  -- `model` as the request named it (a base model, an alias or an `ft:` model); `base_model` the local base model it resolved to.
  model TEXT NOT NULL,
  base_model TEXT NOT NULL,
  -- The fine-tuned model training continues from (its adapter is the starting point), or NULL for a fresh adapter.
  start_model TEXT,
  method TEXT NOT NULL CHECK (method IN ('supervised', 'dpo')),
  training_file TEXT NOT NULL,
  validation_file TEXT,
  -- JSON: as requested ("auto" or numbers); `resolved_hyperparameters` the numbers once the files are validated.
  hyperparameters TEXT NOT NULL,
  resolved_hyperparameters TEXT,
  -- JSON LoraConfig (r, alpha, dropout, targetModules), defaults filled in.
  lora TEXT NOT NULL,
  suffix TEXT,
  seed INTEGER NOT NULL,
  metadata TEXT,
  fine_tuned_model TEXT,
  finished_at INTEGER,
  error_code TEXT,
  error_message TEXT,
  error_param TEXT,
  trained_tokens INTEGER,
  total_steps INTEGER,
  estimated_finish INTEGER,
  result_file TEXT,
  -- When the job last entered `queued`: the scheduler runs queued jobs in this order.
  queued_at INTEGER
) STRICT;

-- Listing is per project by created_at; every index entry also holds the rowid, which breaks ties.
CREATE INDEX fine_tuning_jobs_by_project ON fine_tuning_jobs (project, created_at);
CREATE INDEX fine_tuning_jobs_by_status ON fine_tuning_jobs (status, queued_at);

CREATE TABLE fine_tuning_events (
  -- Insertion order: events are listed newest first by seq, and `after` pages by it.
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  job_id TEXT NOT NULL REFERENCES fine_tuning_jobs (id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL,
  level TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
  type TEXT NOT NULL CHECK (type IN ('message', 'metrics')),
  message TEXT NOT NULL,
  data TEXT,
  -- Metrics events only: the optimizer step. One event per step, so a step redone after a crash replaces its event.
  step INTEGER
) STRICT;

CREATE INDEX fine_tuning_events_by_job ON fine_tuning_events (job_id, seq);
CREATE UNIQUE INDEX fine_tuning_events_one_per_step ON fine_tuning_events (job_id, step) WHERE step IS NOT NULL;

CREATE TABLE fine_tuning_checkpoints (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES fine_tuning_jobs (id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL,
  step_number INTEGER NOT NULL,
  -- The servable model id (a fine_tuned_models row): `…:ckpt-step-N`, or the final model for the last step.
  fine_tuned_model_checkpoint TEXT NOT NULL,
  metrics TEXT NOT NULL,
  UNIQUE (job_id, step_number)
) STRICT;
