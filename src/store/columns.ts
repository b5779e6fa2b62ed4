// The column lists both engines select and insert, in one place so the two schemas' code cannot drift apart.

/** Every column of fine_tuning_jobs, in JobRow's order. */
export const JOB_COLUMNS = [
  'id', 'project', 'created_at', 'status', 'model', 'base_model', 'start_model', 'method', 'training_file', 'validation_file',
  'hyperparameters', 'resolved_hyperparameters', 'lora', 'suffix', 'seed', 'metadata', 'fine_tuned_model', 'finished_at',
  'error_code', 'error_message', 'error_param', 'trained_tokens', 'total_steps', 'estimated_finish', 'result_file', 'queued_at',
  'base_precision', 'owner', 'lease_expires_at',
] as const;
/** The job columns a transition or update may set: never id, project or created_at, and status only through a transition. */
export const SETTABLE_JOB_COLUMNS = new Set<string>(JOB_COLUMNS.filter((c) => !['id', 'project', 'created_at', 'status'].includes(c)));
export const JOBS = JOB_COLUMNS.join(', ');
export const EVENTS = 'id, job_id, created_at, level, type, message, data';
export const CHECKPOINTS = 'id, job_id, created_at, step_number, fine_tuned_model_checkpoint, metrics';
