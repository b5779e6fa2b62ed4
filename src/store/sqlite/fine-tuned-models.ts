// The fine_tuned_models table on SQLite: every servable `ft:` model id and the adapter directory behind it.
import type { Db } from './db.ts';
import type { FineTunedModelRow, FineTunedModelStore } from '../store.ts';

const COLUMNS = 'id, project, base_model, adapter_dir, job_id, step, created_at, base_precision';

export function fineTunedModelStore(db: Db): FineTunedModelStore {
  const insert = db.prepare(`INSERT INTO fine_tuned_models (${COLUMNS}) VALUES (@id, @project, @base_model, @adapter_dir, @job_id, @step, @created_at, @base_precision)`);
  const get = db.prepare(`SELECT ${COLUMNS} FROM fine_tuned_models WHERE project = ? AND id = ?`);
  const list = db.prepare(`SELECT ${COLUMNS} FROM fine_tuned_models WHERE project = ? ORDER BY created_at, rowid`);
  const remove = db.prepare('DELETE FROM fine_tuned_models WHERE project = ? AND id = ?');
  const dirs = db.prepare('SELECT DISTINCT adapter_dir FROM fine_tuned_models').pluck();
  return {
    insert: async (row) => void insert.run(row),
    get: async (project, id) => get.get(project, id) as FineTunedModelRow | undefined,
    list: async (project) => list.all(project) as FineTunedModelRow[],
    delete: async (project, id) => remove.run(project, id).changes === 1,
    adapterDirsInUse: async () => new Set(dirs.all() as string[]),
  };
}
