// The files table: uploaded and generated files, each owned by a project. All file SQL lives here.
import type { Db } from './db.ts';
import { nowSeconds } from './ids.ts';

export type FilePurpose = 'assistants' | 'assistants_output' | 'batch' | 'batch_output' | 'fine-tune' | 'fine-tune-results' | 'vision' | 'user_data' | 'evals';

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
  insert(row: FileRow): void;
  /** The file if it exists in `project` and has not expired. */
  get(project: string, id: string): FileRow | undefined;
  /** One page, ordered by created_at (then insertion); undefined when `after` is not a file of the project. */
  list(project: string, query: FileListQuery): { rows: FileRow[]; hasMore: boolean } | undefined;
  /** Removes the row; false when there was none in `project`. */
  delete(project: string, id: string): boolean;
  /** Deletes rows whose expires_at has passed, except files an unfinished job uses; returns their ids so the blobs can go too. */
  deleteExpired(): string[];
  /** Whether any row (any project) has this id: used to find stray blobs at start-up. */
  exists(id: string): boolean;
}

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
    insert: (row) => void insert.run(row),
    get: (project, id) => get.get({ project, id, now: nowSeconds() }) as FileRow | undefined,
    list(project, q) {
      const now = nowSeconds();
      let position: { created_at: number | null; seq: number | null } = { created_at: null, seq: null };
      if (q.after !== undefined) {
        const found = cursor.get({ project, id: q.after, now }) as { created_at: number; seq: number } | undefined;
        if (!found) return undefined;
        position = found;
      }
      const page = q.order === 'asc' ? pageAsc : pageDesc;
      // One extra row tells whether another page exists.
      const rows = page.all({ project, now, purpose: q.purpose ?? null, created: position.created_at, seq: position.seq, limit: q.limit + 1 }) as FileRow[];
      return { rows: rows.slice(0, q.limit), hasMore: rows.length > q.limit };
    },
    delete: (project, id) => remove.run(project, id).changes === 1,
    deleteExpired: () => (expired.all({ now: nowSeconds() }) as { id: string }[]).map((r) => r.id),
    exists: (id) => exists.get(id) !== undefined,
  };
}
