// The store a test server on `dataDir` uses, opened from the test itself: to register models trained in the test, or to look at rows.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { openStore } from '../../src/store/open.ts';
import type { FineTunedModelRow, Store } from '../../src/store/store.ts';
import { engineEnv, freshDatabaseUrl, POSTGRES_URL_ENV } from './postgres.ts';

/** A store engine to run servers on: its name and the environment that selects it. */
export interface TestEngine {
  name: 'sqlite' | 'postgres';
  env: Record<string, string>;
}

/** The engines available to this run, the embedded one first; PostgreSQL (a fresh database) when a test server runs. */
export async function testEngines(): Promise<TestEngine[]> {
  const engines: TestEngine[] = [{ name: 'sqlite', env: {} }];
  if (process.env[POSTGRES_URL_ENV]) engines.push({ name: 'postgres', env: { LOCALTUNE_DATABASE_URL: await freshDatabaseUrl() } });
  return engines;
}

/** Opens the store of a test server's data directory: on `engine`, by default the one this run's servers use for it. */
export async function openTestStore(dataDir: string, engine?: TestEngine): Promise<Store> {
  const env = engine?.env ?? (await engineEnv(dataDir));
  return openStore({ dataDir, databaseUrl: env.LOCALTUNE_DATABASE_URL });
}

/** Registers an adapter folder (`row.adapter_dir`, under the data dir) as a servable `ft:` model, as a finished job would. */
export async function registerFineTunedModel(dataDir: string, row: FineTunedModelRow): Promise<void> {
  const store = await openTestStore(dataDir);
  try {
    await store.dirs.publish(row.adapter_dir);
    await store.models.insert(row);
  } finally {
    await store.close();
  }
}

/**
 * How many blobs of `kind` the store of `dataDir` holds, on either engine: what a test checks was cleaned up. (The
 * one place tests look inside an engine: blobs are files in the data dir on SQLite, rows on PostgreSQL.)
 */
export async function storedBlobCount(dataDir: string, kind: 'files' | 'upload-parts'): Promise<number> {
  const { LOCALTUNE_DATABASE_URL: url } = await engineEnv(dataDir);
  if (url === undefined) return readdirSync(join(dataDir, kind)).length;
  return withPostgres(url, async (client) => Number((await client.query('SELECT COUNT(*) AS n FROM blobs WHERE kind = $1', [kind])).rows[0].n));
}

/**
 * Runs one SQL statement (`?` placeholders) on the database of `dataDir`, on either engine: for states the API cannot
 * reach on demand, such as an upload past its expiry. Keep the SQL to what both dialects share.
 */
export async function runSql(dataDir: string, sql: string, params: unknown[] = []): Promise<void> {
  const { LOCALTUNE_DATABASE_URL: url } = await engineEnv(dataDir);
  if (url === undefined) {
    const db = new Database(join(dataDir, 'db.sqlite'));
    try {
      db.prepare(sql).run(...params);
    } finally {
      db.close();
    }
    return;
  }
  let n = 0;
  await withPostgres(url, (client) => client.query(sql.replace(/\?/g, () => `$${++n}`), params));
}

async function withPostgres<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
