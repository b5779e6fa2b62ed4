// The PostgreSQL engine of the store: metadata, the job queue, blobs and shared directories in one database that many
// `serve` and `worker` processes share; each node keeps only caches and temp files in its own data directory.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import type { Store } from '../store.ts';
import { newId } from '../ids.ts';
import { MigrationError } from '../migrations.ts';
import { applyPostgresMigrations, openPool, poolDb, type Db } from './db.ts';
import { fileStore } from './files.ts';
import { uploadStore } from './uploads.ts';
import { fineTuningJobStore } from './fine-tuning-jobs.ts';
import { fineTunedModelStore } from './fine-tuned-models.ts';
import { apiKeyStore } from './api-keys.ts';
import { postgresBlobStore } from './blobs.ts';
import { postgresSharedDirs } from './shared-dirs.ts';

export interface PostgresStoreOptions {
  /** `postgres://user:password@host:port/database` (libpq's URL form, as node-postgres reads it). */
  url: string;
  /** This node's own folder: temp files, the blob cache and fetched shared directories. */
  dataDir: string;
}

/**
 * This node's id, made once and kept in `<dataDir>/node-id`: what it wrote (blobs, upload completions) is recognized
 * as its own after a restart, so start-up recovery cleans up after this node and never after another.
 */
function nodeId(dataDir: string): string {
  const path = join(dataDir, 'node-id');
  try {
    writeFileSync(path, newId('node-', 16), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readFileSync(path, 'utf8').trim();
}

/** Where the URL points, without its password, for error messages. */
function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return 'the configured database';
  }
}

/** Connects, applies pending migrations (throws MigrationError on a database this code cannot use) and returns the store. */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  mkdirSync(options.dataDir, { recursive: true });
  const node = nodeId(options.dataDir);
  const pool: pg.Pool = openPool(options.url);
  try {
    await applyPostgresMigrations(pool);
  } catch (err) {
    await pool.end();
    if (err instanceof MigrationError) throw err;
    throw new Error(`PostgreSQL at ${withoutPassword(options.url)}: ${(err as Error).message}`, { cause: err });
  }
  const root = poolDb(pool);
  // Blobs and shared directories always use the pool: they are not part of a transaction's work.
  const blobs = postgresBlobStore(root, options.dataDir, 'files', node);
  const parts = postgresBlobStore(root, options.dataDir, 'upload-parts', node);
  const dirs = postgresSharedDirs(root, options.dataDir, node);
  const storeOn = (db: Db): Store => ({
    files: fileStore(db),
    uploads: uploadStore(db, node, fileStore),
    jobs: fineTuningJobStore(db),
    models: fineTunedModelStore(db),
    keys: apiKeyStore(db),
    blobs,
    parts,
    dirs,
    transaction: (fn) => db.transaction((tx) => fn(storeOn(tx))),
    close: () => pool.end(),
  });
  return storeOn(root);
}
