// The uploads and upload_parts tables (the Uploads API): an upload's state machine and its parts. All upload SQL lives here.
import type { Db } from './db.ts';
import type { FilePurpose, FileRow, FileStore } from './files.ts';
import { nowSeconds } from './ids.ts';

/** `completing` is ours: the wire shows it as `pending`. */
export type UploadStatus = 'pending' | 'completing' | 'completed' | 'cancelled' | 'expired';

export interface UploadRow {
  id: string;
  project: string;
  bytes: number;
  filename: string;
  mime_type: string;
  purpose: FilePurpose;
  created_at: number;
  expires_at: number;
  /** `expires_after.seconds` for the File the upload becomes, or null. */
  file_expires_after: number | null;
  status: UploadStatus;
}

export interface UploadPartRow {
  id: string;
  upload_id: string;
  bytes: number;
  created_at: number;
}

export interface UploadStore {
  insert(row: UploadRow): void;
  /** The upload if it exists in `project`; a pending one past `expires_at` reads as `expired` even before the sweep marks it. */
  get(project: string, id: string): UploadRow | undefined;
  /** Records a part whose blob is already stored; false (nothing recorded) unless the upload is pending and unexpired. */
  addPart(part: UploadPartRow): boolean;
  /** The upload's parts, oldest first. */
  parts(uploadId: string): UploadPartRow[];
  /** pending (and unexpired) → completing; false when the upload was in any other state. */
  beginCompletion(id: string): boolean;
  /** completing → pending, after a completion that failed. */
  abortCompletion(id: string): void;
  /**
   * completing → completed in one transaction with inserting the File it became (so neither exists without the
   * other). Returns the ids of the parts it removed, whose blobs the caller deletes.
   */
  finishCompletion(id: string, file: FileRow, files: FileStore): string[];
  /** pending → cancelled, removing its parts; undefined when the upload was not pending, else the removed part ids. */
  cancel(id: string): string[] | undefined;
  /**
   * Marks pending uploads past their expiry as expired and removes the parts of every upload that is no longer
   * pending (left by a crash between a state change and the blob removal). Returns the removed part ids.
   */
  sweep(): string[];
  /** Start-up: completions a crash cut off go back to pending (their half-assembled temp file is gone). Returns how many. */
  resetInterruptedCompletions(): number;
  /** Whether any part (any upload) has this id: used to find stray part blobs at start-up. */
  partExists(id: string): boolean;
}

const COLUMNS = 'id, project, bytes, filename, mime_type, purpose, created_at, expires_at, file_expires_after, status';

export function uploadStore(db: Db): UploadStore {
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

  return {
    insert: (row) => void insert.run(row),
    get: (project, id) => get.get({ project, id, now: nowSeconds() }) as UploadRow | undefined,
    addPart: (part) => addPart.run({ ...part, now: nowSeconds() }).changes === 1,
    parts: (uploadId) => parts.all(uploadId) as UploadPartRow[],
    beginCompletion: (id) => transition(id, 'pending', 'completing'),
    abortCompletion: (id) => void transition(id, 'completing', 'pending'),
    finishCompletion: db.transaction((id: string, file: FileRow, files: FileStore) => {
      if (!transition(id, 'completing', 'completed')) throw new Error(`upload ${id} is not being completed`);
      files.insert(file);
      return ids(deleteParts.all(id));
    }),
    cancel: db.transaction((id: string) => (transition(id, 'pending', 'cancelled') ? ids(deleteParts.all(id)) : undefined)),
    sweep: db.transaction(() => {
      expire.run(nowSeconds());
      return ids(deleteStaleParts.all());
    }),
    resetInterruptedCompletions: () => resetCompleting.run().changes,
    partExists: (id) => partExists.get(id) !== undefined,
  };
}
