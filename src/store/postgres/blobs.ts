// Blobs on PostgreSQL: contents kept as 1 MiB bytea chunks, streamed in and out (never whole in memory), with a
// per-node cache under `<dataDir>/cache/blobs/` for code that reads local files. Blobs are immutable once committed.
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobStore } from '../store.ts';
import { randomAlnum, nowSeconds } from '../ids.ts';
import type { Db } from './db.ts';

export type BlobKind = 'files' | 'upload-parts' | 'dirs';

const CHUNK_BYTES = 1024 * 1024;
/** Another node's orphan is removed only once this old: a fresh one may be about to get its row. */
const FOREIGN_ORPHAN_SECONDS = 24 * 3600;

export function checkBlobId(id: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new Error(`blob id '${id}' has characters outside [A-Za-z0-9_-]`);
  return id;
}

function missing(kind: BlobKind, id: string): Error {
  return Object.assign(new Error(`blob ${kind}/${id} does not exist`), { code: 'ENOENT' });
}

/** Stores the file at `path` as blob `id` (replacing any), inside the caller's transaction `tx`: all chunks or none. */
export async function putChunks(tx: Db, kind: BlobKind, id: string, path: string, node: string): Promise<void> {
  await tx.query('DELETE FROM blobs WHERE kind = $1 AND id = $2', [kind, id]);
  await tx.query('INSERT INTO blobs (kind, id, bytes, created_at, node) VALUES ($1, $2, 0, $3, $4)', [kind, id, nowSeconds(), node]);
  let n = 0;
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    await tx.query('INSERT INTO blob_chunks (kind, id, n, data) VALUES ($1, $2, $3, $4)', [kind, id, n++, chunk]);
    bytes += chunk.length;
  }
  await tx.query('UPDATE blobs SET bytes = $3 WHERE kind = $1 AND id = $2', [kind, id, bytes]);
}

/** Blob `id` as a byte stream that fetches one chunk at a time as the reader pulls; errors with code ENOENT if absent. */
export function readChunks(db: Db, kind: BlobKind, id: string): Readable {
  async function* chunks() {
    const head = await db.query<{ chunks: number }>(
      'SELECT (SELECT COUNT(*) FROM blob_chunks AS c WHERE c.kind = b.kind AND c.id = b.id) AS chunks FROM blobs AS b WHERE kind = $1 AND id = $2', [kind, id]);
    if (head.rowCount !== 1) throw missing(kind, id);
    for (let n = 0; n < head.rows[0]!.chunks; n++) {
      const r = await db.query<{ data: Buffer }>('SELECT data FROM blob_chunks WHERE kind = $1 AND id = $2 AND n = $3', [kind, id, n]);
      // Removed (or replaced) while being read.
      if (r.rowCount !== 1) throw missing(kind, id);
      yield r.rows[0]!.data;
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** Writes a stream to `path` through a temp file beside it and a rename, so `path` never holds half a file. */
export async function writeAtomically(source: Readable, path: string, tempDir: string): Promise<void> {
  mkdirSync(tempDir, { recursive: true });
  const temp = join(tempDir, `${Date.now()}-${randomAlnum(12)}`);
  try {
    await pipeline(source, createWriteStream(temp));
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** Blobs of one kind; temp files under `<dataDir>/tmp/uploads`, the read cache under `<dataDir>/cache/blobs/<kind>`. */
export function postgresBlobStore(db: Db, dataDir: string, kind: 'files' | 'upload-parts', node: string): BlobStore {
  const tmp = join(dataDir, 'tmp', 'uploads');
  const cache = join(dataDir, 'cache', 'blobs', kind);
  const cacheTmp = join(dataDir, 'tmp', 'blob-cache');
  mkdirSync(tmp, { recursive: true });
  mkdirSync(cache, { recursive: true });
  const cachePath = (id: string) => join(cache, checkBlobId(id));
  // Concurrent localPath calls for one blob share one download.
  const downloads = new Map<string, Promise<string>>();

  const store: BlobStore = {
    tempPath: () => join(tmp, `${Date.now()}-${randomAlnum(12)}`),
    async commit(tempPath, id) {
      await db.transaction((tx) => putChunks(tx, kind, checkBlobId(id), tempPath, node));
      await rm(tempPath, { force: true });
    },
    async write(id, data) {
      const temp = store.tempPath();
      await writeFile(temp, data);
      try {
        await store.commit(temp, id);
      } finally {
        await rm(temp, { force: true });
      }
    },
    read: (id) => readChunks(db, kind, checkBlobId(id)),
    localPath(id) {
      const path = cachePath(id);
      let pending = downloads.get(id);
      if (!pending) {
        pending = (async () => {
          if (!(await exists(path))) await writeAtomically(readChunks(db, kind, id), path, cacheTmp);
          return path;
        })().finally(() => downloads.delete(id));
        downloads.set(id, pending);
      }
      return pending;
    },
    async remove(id) {
      await db.query('DELETE FROM blobs WHERE kind = $1 AND id = $2', [kind, checkBlobId(id)]);
      await rm(cachePath(id), { force: true });
    },
    async recover(isKnown) {
      const temps = await readdir(tmp);
      for (const name of temps) await rm(join(tmp, name), { force: true, recursive: true });
      const candidates = await db.query<{ id: string }>('SELECT id FROM blobs WHERE kind = $1 AND (node = $2 OR created_at < $3)',
        [kind, node, nowSeconds() - FOREIGN_ORPHAN_SECONDS]);
      let orphans = 0;
      for (const { id } of candidates.rows) {
        if (await isKnown(id)) continue;
        await store.remove(id);
        orphans++;
      }
      // Cached copies of blobs removed through another node.
      for (const name of await readdir(cache)) {
        if (!(await isKnown(name))) await rm(join(cache, name), { force: true });
      }
      return { temp: temps.length, orphans };
    },
  };
  return store;
}
