// The fine_tuned_models table: every servable `ft:` model id and the adapter directory behind it.
import type { Db } from './db.ts';

export interface FineTunedModelRow {
  id: string;
  project: string;
  base_model: string;
  /** Relative to the data directory. */
  adapter_dir: string;
  job_id: string | null;
  step: number | null;
  created_at: number;
  /** The base precision the adapter was trained on, and is served on. */
  base_precision: 'fp32' | 'nf4' | 'int4' | 'int8';
}

export interface FineTunedModelStore {
  insert(row: FineTunedModelRow): void;
  /** The model if it exists in `project`. */
  get(project: string, id: string): FineTunedModelRow | undefined;
  /** All of a project's models, oldest first. */
  list(project: string): FineTunedModelRow[];
  /** Removes the row; false when there was none in `project`. */
  delete(project: string, id: string): boolean;
  /** Every adapter directory some model of any project is served from. */
  adapterDirsInUse(): Set<string>;
}

const COLUMNS = 'id, project, base_model, adapter_dir, job_id, step, created_at, base_precision';

export function fineTunedModelStore(db: Db): FineTunedModelStore {
  const insert = db.prepare(`INSERT INTO fine_tuned_models (${COLUMNS}) VALUES (@id, @project, @base_model, @adapter_dir, @job_id, @step, @created_at, @base_precision)`);
  const get = db.prepare(`SELECT ${COLUMNS} FROM fine_tuned_models WHERE project = ? AND id = ?`);
  const list = db.prepare(`SELECT ${COLUMNS} FROM fine_tuned_models WHERE project = ? ORDER BY created_at, rowid`);
  const remove = db.prepare('DELETE FROM fine_tuned_models WHERE project = ? AND id = ?');
  const dirs = db.prepare('SELECT DISTINCT adapter_dir FROM fine_tuned_models').pluck();
  return {
    insert: (row) => void insert.run(row),
    get: (project, id) => get.get(project, id) as FineTunedModelRow | undefined,
    list: (project) => list.all(project) as FineTunedModelRow[],
    delete: (project, id) => remove.run(project, id).changes === 1,
    adapterDirsInUse: () => new Set(dirs.all() as string[]),
  };
}
