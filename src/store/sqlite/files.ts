// The files table on SQLite: uploaded and generated files, each owned by a project.
import type { Db } from './db.ts';
import { nowSeconds } from '../ids.ts';
import { page } from '../paging.ts';
import type { FileRow, FileStore } from '../store.ts';

const COLUMNS = 'id, project, bytes, created_at, expires_at, filename, purpose, status, status_details';
const LIVE = '(expires_at IS NULL OR expires_at > @now)';
const UNFINISHED = "'validating_files', 'queued', 'running', 'paused'";

export function fileStore(db: Db): FileStore {
  const insert = db.prepare(`INSERT INTO files (${COLUMNS}) VALUES (@id, @project, @bytes, @created_at, @expires_at, @filename, @purpose, @status, @status_details)`);
  const get = db.prepare(`SELECT ${COLUMNS} FROM files WHERE project = @project AND id = @id AND ${LIVE}`);
  const cursor = db.prepare(`SELECT created_at, rowid AS seq FROM files WHERE project = @project AND id = @id AND ${LIVE}`);
  const filter = `project = @project AND (@purpose IS NULL OR purpose = @purpose) AND ${LIVE}`;
  const pageDesc = db.prepare(`SELECT ${COLUMNS} FROM files WHERE ${filter}
    AND (@created IS NULL OR (created_at, rowid) < (@created, @seq)) ORDER BY created_at DESC, rowid DESC LIMIT @limit`);
  const pageAsc = db.prepare(`SELECT ${COLUMNS} FROM files WHERE ${filter}
    AND (@created IS NULL OR (created_at, rowid) > (@created, @seq)) ORDER BY created_at ASC, rowid ASC LIMIT @limit`);
  const remove = db.prepare('DELETE FROM files WHERE project = ? AND id = ?');
  // A job that has not finished may still read its files (a resume re-reads them), so they outlive their expiry until it ends.
  const expired = db.prepare(`DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= @now AND id NOT IN (
    SELECT training_file FROM fine_tuning_jobs WHERE status IN (${UNFINISHED})
    UNION SELECT validation_file FROM fine_tuning_jobs WHERE validation_file IS NOT NULL AND status IN (${UNFINISHED})) RETURNING id`);
  const exists = db.prepare('SELECT 1 FROM files WHERE id = ?');

  return {
    insert: async (row) => void insert.run(row),
    get: async (project, id) => get.get({ project, id, now: nowSeconds() }) as FileRow | undefined,
    async list(project, q) {
      const now = nowSeconds();
      let position: { created_at: number | null; seq: number | null } = { created_at: null, seq: null };
      if (q.after !== undefined) {
        const found = cursor.get({ project, id: q.after, now }) as { created_at: number; seq: number } | undefined;
        if (!found) return undefined;
        position = found;
      }
      const query = q.order === 'asc' ? pageAsc : pageDesc;
      // One extra row tells whether another page exists.
      const rows = query.all({ project, now, purpose: q.purpose ?? null, created: position.created_at, seq: position.seq, limit: q.limit + 1 }) as FileRow[];
      return page(rows, q.limit);
    },
    delete: async (project, id) => remove.run(project, id).changes === 1,
    deleteExpired: async () => (expired.all({ now: nowSeconds() }) as { id: string }[]).map((r) => r.id),
    exists: async (id) => exists.get(id) !== undefined,
  };
}
