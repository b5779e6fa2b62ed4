// Opens the store the configuration names: PostgreSQL when a database URL is given, else the data directory's SQLite.
import type { Store } from './store.ts';
import { openSqliteStore } from './sqlite/index.ts';
import { openPostgresStore } from './postgres/index.ts';

export interface StoreOptions {
  /** This node's data directory: the SQLite file and blobs, or (with PostgreSQL) this node's caches and temp files. */
  dataDir: string;
  /** `postgres://…`: metadata, queue and blobs shared by every node using it. */
  databaseUrl?: string;
}

export async function openStore(o: StoreOptions): Promise<Store> {
  return o.databaseUrl === undefined ? openSqliteStore(o.dataDir) : openPostgresStore({ url: o.databaseUrl, dataDir: o.dataDir });
}
