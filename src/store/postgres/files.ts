// The files table on PostgreSQL: uploaded and generated files, each owned by a project.
import type { FileRow, FileStore } from '../store.ts';
import { page } from '../paging.ts';
import { nowSeconds } from '../ids.ts';
import type { Db } from './db.ts';

const COLUMNS = 'id, project, bytes, created_at, expires_at, filename, purpose, status, status_details';
const LIVE = '(expires_at IS NULL OR expires_at > $NOW)';
const UNFINISHED = "'validating_files', 'queued', 'running', 'paused'";

export function fileStore(db: Db): FileStore {
  const live = (n: number) => LIVE.replace('$NOW', `$${n}`);
  return {
    async insert(row) {
      await db.query(`INSERT INTO files (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [row.id, row.project, row.bytes, row.created_at, row.expires_at, row.filename, row.purpose, row.status, row.status_details]);
    },
    async get(project, id) {
      const r = await db.query<FileRow>(`SELECT ${COLUMNS} FROM files WHERE project = $1 AND id = $2 AND ${live(3)}`, [project, id, nowSeconds()]);
      return r.rows[0];
    },
    async list(project, q) {
      const now = nowSeconds();
      let position: { created_at: number; seq: number } | undefined;
      if (q.after !== undefined) {
        position = (await db.query<{ created_at: number; seq: number }>(
          `SELECT created_at, seq FROM files WHERE project = $1 AND id = $2 AND ${live(3)}`, [project, q.after, now])).rows[0];
        if (!position) return undefined;
      }
      const [cmp, dir] = q.order === 'asc' ? ['>', 'ASC'] : ['<', 'DESC'];
      const r = await db.query<FileRow>(`SELECT ${COLUMNS} FROM files WHERE project = $1 AND ($2::text IS NULL OR purpose = $2) AND ${live(3)}
        AND ($4::bigint IS NULL OR (created_at, seq) ${cmp} ($4, $5)) ORDER BY created_at ${dir}, seq ${dir} LIMIT $6`,
      [project, q.purpose ?? null, now, position?.created_at ?? null, position?.seq ?? null, q.limit + 1]);
      return page(r.rows, q.limit);
    },
    async delete(project, id) {
      return (await db.query('DELETE FROM files WHERE project = $1 AND id = $2', [project, id])).rowCount === 1;
    },
    async deleteExpired() {
      // A job that has not finished may still read its files (a resume re-reads them), so they outlive their expiry until it ends.
      const r = await db.query<{ id: string }>(`DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 AND id NOT IN (
        SELECT training_file FROM fine_tuning_jobs WHERE status IN (${UNFINISHED})
        UNION SELECT validation_file FROM fine_tuning_jobs WHERE validation_file IS NOT NULL AND status IN (${UNFINISHED})) RETURNING id`, [nowSeconds()]);
      return r.rows.map((row) => row.id);
    },
    async exists(id) {
      return (await db.query('SELECT 1 FROM files WHERE id = $1', [id])).rowCount === 1;
    },
  };
}
