// The embedded engine: one SQLite file and the blob folders of one data directory, behind the Store interface.
import type { Store } from '../store.ts';
import { apiKeyStore } from './api-keys.ts';
import { blobStore } from './blobs.ts';
import { openDatabase } from './db.ts';
import { fileStore } from './files.ts';
import { fineTunedModelStore } from './fine-tuned-models.ts';
import { fineTuningJobStore } from './fine-tuning-jobs.ts';
import { sharedDirs } from './shared-dirs.ts';
import { uploadStore } from './uploads.ts';

export function openSqliteStore(dataDir: string): Store {
  const db = openDatabase(dataDir);
  const files = fileStore(db);
  // Transactions take turns: the connection is one, and BEGIN inside another transaction fails.
  let turn: Promise<unknown> = Promise.resolve();
  const store: Store = {
    files,
    uploads: uploadStore(db, files),
    jobs: fineTuningJobStore(db),
    models: fineTunedModelStore(db),
    keys: apiKeyStore(db),
    blobs: blobStore(dataDir),
    parts: blobStore(dataDir, 'upload-parts'),
    dirs: sharedDirs(dataDir),
    transaction(fn) {
      const run = turn.then(async () => {
        // IMMEDIATE takes the write lock at once: a claim's read and its update see no other writer in between.
        db.exec('BEGIN IMMEDIATE');
        try {
          const result = await fn(inTransaction);
          db.exec('COMMIT');
          return result;
        } catch (err) {
          if (db.inTransaction) db.exec('ROLLBACK');
          throw err;
        }
      });
      turn = run.catch(() => undefined);
      return run;
    },
    close: async () => void db.close(),
  };
  // Inside a transaction every call already runs in it; a nested transaction joins the outer one.
  const inTransaction: Store = { ...store, transaction: (fn) => fn(inTransaction) };
  return store;
}
