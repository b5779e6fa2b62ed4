// The uploads and upload_parts tables on PostgreSQL (the Uploads API): an upload's state machine and its parts.
import type { FileStore, UploadPartRow, UploadRow, UploadStatus, UploadStore } from '../store.ts';
import { nowSeconds } from '../ids.ts';
import type { Db } from './db.ts';

/** A completion still `completing` this long after it began was cut off on a node that never came back. */
const ABANDONED_SECONDS = 3600;

const COLUMNS = 'id, project, bytes, filename, mime_type, purpose, created_at, expires_at, file_expires_after, status';

/** `node` is this process's node id; `filesIn` gives the file store bound to the same transaction, for the File a completion becomes. */
export function uploadStore(db: Db, node: string, filesIn: (db: Db) => FileStore): UploadStore {
  // One status change; a pending upload past its expiry changes no more. Entering `completing` records who completes it.
  const transition = async (tx: Db, id: string, from: UploadStatus, to: UploadStatus) =>
    (await tx.query(`UPDATE uploads SET status = $3,
        completing_node = CASE WHEN $3 = 'completing' THEN $5::text END, completing_since = CASE WHEN $3 = 'completing' THEN $4::bigint END
      WHERE id = $1 AND status = $2 AND ($2 != 'pending' OR expires_at > $4)`,
    [id, from, to, nowSeconds(), node])).rowCount === 1;
  const deleteParts = async (tx: Db, id: string) =>
    (await tx.query<{ id: string }>('DELETE FROM upload_parts WHERE upload_id = $1 RETURNING id', [id])).rows.map((r) => r.id);

  return {
    async insert(row) {
      await db.query(`INSERT INTO uploads (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [row.id, row.project, row.bytes, row.filename, row.mime_type, row.purpose, row.created_at, row.expires_at, row.file_expires_after, row.status]);
    },
    async get(project, id) {
      return (await db.query<UploadRow>(`SELECT id, project, bytes, filename, mime_type, purpose, created_at, expires_at, file_expires_after,
        CASE WHEN status = 'pending' AND expires_at <= $3 THEN 'expired' ELSE status END AS status
        FROM uploads WHERE project = $1 AND id = $2`, [project, id, nowSeconds()])).rows[0];
    },
    async addPart(part) {
      // FOR SHARE holds off a concurrent completion or cancel until this part is in, so none misses it.
      return db.transaction(async (tx) => {
        const open = await tx.query(`SELECT 1 FROM uploads WHERE id = $1 AND status = 'pending' AND expires_at > $2 FOR SHARE`, [part.upload_id, nowSeconds()]);
        if (open.rowCount !== 1) return false;
        await tx.query('INSERT INTO upload_parts (id, upload_id, bytes, created_at) VALUES ($1, $2, $3, $4)', [part.id, part.upload_id, part.bytes, part.created_at]);
        return true;
      });
    },
    async parts(uploadId) {
      return (await db.query<UploadPartRow>('SELECT id, upload_id, bytes, created_at FROM upload_parts WHERE upload_id = $1 ORDER BY created_at, seq', [uploadId])).rows;
    },
    beginCompletion: (id) => transition(db, id, 'pending', 'completing'),
    async abortCompletion(id) {
      await transition(db, id, 'completing', 'pending');
    },
    finishCompletion: (id, file) => db.transaction(async (tx) => {
      if (!(await transition(tx, id, 'completing', 'completed'))) throw new Error(`upload ${id} is not being completed`);
      await filesIn(tx).insert(file);
      return deleteParts(tx, id);
    }),
    cancel: (id) => db.transaction(async (tx) => ((await transition(tx, id, 'pending', 'cancelled')) ? deleteParts(tx, id) : undefined)),
    sweep: () => db.transaction(async (tx) => {
      await tx.query("UPDATE uploads SET status = 'expired' WHERE status = 'pending' AND expires_at <= $1", [nowSeconds()]);
      return (await tx.query<{ id: string }>(`DELETE FROM upload_parts WHERE upload_id IN (
        SELECT id FROM uploads WHERE status IN ('completed', 'cancelled', 'expired')) RETURNING id`)).rows.map((r) => r.id);
    }),
    async resetInterruptedCompletions() {
      return (await db.query(`UPDATE uploads SET status = 'pending', completing_node = NULL, completing_since = NULL
        WHERE status = 'completing' AND (completing_node = $1 OR completing_since <= $2)`, [node, nowSeconds() - ABANDONED_SECONDS])).rowCount ?? 0;
    },
    async partExists(id) {
      return (await db.query('SELECT 1 FROM upload_parts WHERE id = $1', [id])).rowCount === 1;
    },
  };
}
