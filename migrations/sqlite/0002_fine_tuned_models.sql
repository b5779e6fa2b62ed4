-- Fine-tuned models and checkpoints: each is a servable `ft:` id backed by a LoRA adapter directory.

CREATE TABLE fine_tuned_models (
  id TEXT PRIMARY KEY,
  project TEXT NOT NULL,
  base_model TEXT NOT NULL,
  -- The adapter's directory relative to the data directory (PEFT layout); never taken from a request.
  adapter_dir TEXT NOT NULL,
  -- The job that produced it and, for an intermediate checkpoint, its optimizer step.
  job_id TEXT,
  step INTEGER,
  created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX fine_tuned_models_by_project ON fine_tuned_models (project, created_at);
