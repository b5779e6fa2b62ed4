// Shared directories on PostgreSQL (adapters, resume points): a node publishes a finished folder as a tar blob; other
// nodes fetch it into their own data directory on first use, and again only when a newer version is published.
import { mkdirSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { create as createTar, extract as extractTar } from 'tar';
import type { SharedDirs } from '../store.ts';
import { dataDirFolder } from '../data-dir.ts';
import { newId, nowSeconds, randomAlnum } from '../ids.ts';
import type { Db } from './db.ts';
import { putChunks, readChunks, writeAtomically } from './blobs.ts';

/** A published blob vanishes under a reader when it is republished meanwhile: the reader starts over, this many times. */
const FETCH_ATTEMPTS = 3;

export function postgresSharedDirs(db: Db, dataDir: string, node: string): SharedDirs {
  const tmp = join(dataDir, 'tmp', 'dirs');
  // Which published version (its blob id) each local folder holds, kept outside the folders so they hold only their content.
  const versions = join(dataDir, 'cache', 'dirs');
  mkdirSync(tmp, { recursive: true });
  mkdirSync(versions, { recursive: true });
  const localDir = (key: string) => dataDirFolder(dataDir, key);
  // One spelling per folder (`a/./b` and `a/b` are one key), whatever the caller wrote.
  const keyOf = (key: string) => relative(resolve(dataDir), localDir(key)).split(sep).join('/');
  const versionFile = (key: string) => join(versions, encodeURIComponent(keyOf(key)));
  const localVersion = (key: string) => readFile(versionFile(key), 'utf8').catch(() => undefined);
  const temp = () => join(tmp, `${Date.now()}-${randomAlnum(12)}`);
  const fetching = new Map<string, Promise<string | undefined>>();

  async function download(key: string, blobId: string): Promise<void> {
    const archive = temp();
    const folder = temp();
    const old = temp();
    try {
      await writeAtomically(readChunks(db, 'dirs', blobId), archive, tmp);
      await mkdir(folder);
      await extractTar({ file: archive, cwd: folder });
      // Swap the whole folder at once: readers see the old version or the new, never a mix.
      const target = localDir(key);
      await mkdir(dirname(target), { recursive: true });
      await rename(target, old).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
      await rename(folder, target);
      await writeFile(versionFile(key), blobId);
    } finally {
      await Promise.all([archive, folder, old].map((p) => rm(p, { recursive: true, force: true })));
    }
  }

  async function fetchOnce(key: string): Promise<string | undefined> {
    for (let attempt = 1; ; attempt++) {
      const row = (await db.query<{ blob_id: string }>('SELECT blob_id FROM shared_dirs WHERE key = $1', [keyOf(key)])).rows[0];
      if (!row) return undefined;
      const target = localDir(key);
      if ((await localVersion(key)) === row.blob_id && (await stat(target).then(() => true, () => false))) return target;
      try {
        await download(key, row.blob_id);
        return target;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === FETCH_ATTEMPTS) throw err;
      }
    }
  }

  /** Makes `archive` (stored as blob `blobId`) the published version of `key`, or with no archive unpublishes it. */
  const setPublished = (key: string, next?: { blobId: string; archive: string }) => db.transaction(async (tx) => {
    // Two changes of one key take turns (even the first publish, when there is no row to lock), so none leaves a blob behind.
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [keyOf(key)]);
    const previous = (await tx.query<{ blob_id: string }>('DELETE FROM shared_dirs WHERE key = $1 RETURNING blob_id', [keyOf(key)])).rows[0];
    if (previous) await tx.query("DELETE FROM blobs WHERE kind = 'dirs' AND id = $1", [previous.blob_id]);
    if (next) {
      await putChunks(tx, 'dirs', next.blobId, next.archive, node);
      await tx.query('INSERT INTO shared_dirs (key, blob_id, published_at) VALUES ($1, $2, $3)', [keyOf(key), next.blobId, nowSeconds()]);
    }
  });

  return {
    localDir,
    async publish(key) {
      // A folder that is not there is published as such: nobody's fetch finds it (as on SQLite, where the folder is all there is).
      if (!(await stat(localDir(key)).then(() => true, () => false))) {
        await setPublished(key);
        await rm(versionFile(key), { force: true });
        return;
      }
      const archive = temp();
      const blobId = newId('dir-');
      try {
        await createTar({ cwd: localDir(key), file: archive, portable: true }, ['.']);
        await setPublished(key, { blobId, archive });
        await writeFile(versionFile(key), blobId);
      } finally {
        await rm(archive, { force: true });
      }
    },
    fetch(key) {
      const k = keyOf(key);
      let pending = fetching.get(k);
      if (!pending) {
        pending = fetchOnce(k).finally(() => fetching.delete(k));
        fetching.set(k, pending);
      }
      return pending;
    },
    async remove(key) {
      await setPublished(key);
      await rm(localDir(key), { recursive: true, force: true });
      await rm(versionFile(key), { force: true });
    },
  };
}
