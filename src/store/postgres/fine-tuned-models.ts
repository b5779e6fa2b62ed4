// The fine_tuned_models table on PostgreSQL: every servable `ft:` model id and the adapter directory behind it.
import type { FineTunedModelRow, FineTunedModelStore } from '../store.ts';
import type { Db } from './db.ts';

const COLUMNS = 'id, project, base_model, adapter_dir, job_id, step, created_at, base_precision';

export function fineTunedModelStore(db: Db): FineTunedModelStore {
  return {
    async insert(row) {
      await db.query(`INSERT INTO fine_tuned_models (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [row.id, row.project, row.base_model, row.adapter_dir, row.job_id, row.step, row.created_at, row.base_precision]);
    },
    async get(project, id) {
      return (await db.query<FineTunedModelRow>(`SELECT ${COLUMNS} FROM fine_tuned_models WHERE project = $1 AND id = $2`, [project, id])).rows[0];
    },
    async list(project) {
      return (await db.query<FineTunedModelRow>(`SELECT ${COLUMNS} FROM fine_tuned_models WHERE project = $1 ORDER BY created_at, seq`, [project])).rows;
    },
    async delete(project, id) {
      return (await db.query('DELETE FROM fine_tuned_models WHERE project = $1 AND id = $2', [project, id])).rowCount === 1;
    },
    async adapterDirsInUse() {
      return new Set((await db.query<{ adapter_dir: string }>('SELECT DISTINCT adapter_dir FROM fine_tuned_models')).rows.map((r) => r.adapter_dir));
    },
  };
}
