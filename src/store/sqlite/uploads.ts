// The uploads and upload_parts tables on SQLite (the Uploads API): an upload's state machine and its parts.
import type { Db } from './db.ts';
import { nowSeconds } from '../ids.ts';
import type { FileStore, UploadPartRow, UploadRow, UploadStatus, UploadStore } from '../store.ts';

const COLUMNS = 'id, project, bytes, filename, mime_type, purpose, created_at, expires_at, file_expires_after, status';

/** `files` is the same database's file store: a completion inserts the File it became. */
export function uploadStore(db: Db, files: FileStore): UploadStore {
  const insert = db.prepare(`INSERT INTO uploads (${COLUMNS}) VALUES (@id, @project, @bytes, @filename, @mime_type, @purpose, @created_at, @expires_at, @file_expires_after, @status)`);
  const get = db.prepare(`SELECT id, project, bytes, filename, mime_type, purpose, created_at, expires_at, file_expires_after,
    CASE WHEN status = 'pending' AND expires_at <= @now THEN 'expired' ELSE status END AS status
    FROM uploads WHERE project = @project AND id = @id`);
  const addPart = db.prepare(`INSERT INTO upload_parts (id, upload_id, bytes, created_at)
    SELECT @id, @upload_id, @bytes, @created_at WHERE EXISTS (SELECT 1 FROM uploads WHERE id = @upload_id AND status = 'pending' AND expires_at > @now)`);
  const parts = db.prepare('SELECT id, upload_id, bytes, created_at FROM upload_parts WHERE upload_id = ? ORDER BY created_at, rowid');
  const setStatus = db.prepare('UPDATE uploads SET status = @to WHERE id = @id AND status = @from AND (@from != \'pending\' OR expires_at > @now)');
  const deleteParts = db.prepare('DELETE FROM upload_parts WHERE upload_id = ? RETURNING id');
  const expire = db.prepare("UPDATE uploads SET status = 'expired' WHERE status = 'pending' AND expires_at <= ?");
  const deleteStaleParts = db.prepare(`DELETE FROM upload_parts WHERE upload_id IN (
    SELECT id FROM uploads WHERE status IN ('completed', 'cancelled', 'expired')) RETURNING id`);
  const resetCompleting = db.prepare("UPDATE uploads SET status = 'pending' WHERE status = 'completing'");
  const partExists = db.prepare('SELECT 1 FROM upload_parts WHERE id = ?');

  const transition = (id: string, from: UploadStatus, to: UploadStatus) => setStatus.run({ id, from, to, now: nowSeconds() }).changes === 1;
  const ids = (rows: unknown[]) => (rows as { id: string }[]).map((r) => r.id);

  const finishCompletion = db.transaction((id: string) => {
    if (!transition(id, 'completing', 'completed')) throw new Error(`upload ${id} is not being completed`);
    return ids(deleteParts.all(id));
  });
  const cancel = db.transaction((id: string) => (transition(id, 'pending', 'cancelled') ? ids(deleteParts.all(id)) : undefined));
  const sweep = db.transaction(() => {
    expire.run(nowSeconds());
    return ids(deleteStaleParts.all());
  });

  return {
    insert: async (row) => void insert.run(row),
    get: async (project, id) => get.get({ project, id, now: nowSeconds() }) as UploadRow | undefined,
    addPart: async (part) => addPart.run({ ...part, now: nowSeconds() }).changes === 1,
    parts: async (uploadId) => parts.all(uploadId) as UploadPartRow[],
    beginCompletion: async (id) => transition(id, 'pending', 'completing'),
    abortCompletion: async (id) => void transition(id, 'completing', 'pending'),
    async finishCompletion(id, file) {
      // The file insert is synchronous underneath (SQLite), so it lands inside this one transaction.
      db.exec('SAVEPOINT finish_completion');
      try {
        const removed = finishCompletion(id);
        await files.insert(file);
        db.exec('RELEASE finish_completion');
        return removed;
      } catch (err) {
        db.exec('ROLLBACK TO finish_completion');
        db.exec('RELEASE finish_completion');
        throw err;
      }
    },
    cancel: async (id) => cancel(id),
    sweep: async () => sweep(),
    resetInterruptedCompletions: async () => resetCompleting.run().changes,
    partExists: async (id) => partExists.get(id) !== undefined,
  };
}
