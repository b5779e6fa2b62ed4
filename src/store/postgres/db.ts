// The PostgreSQL connection: a pool, the one way table code queries it (alone or inside a transaction), and migrations.
import pg from 'pg';
import { fileURLToPath } from 'node:url';
import { MigrationError, pendingMigrations, readMigrations, type AppliedMigration } from '../migrations.ts';

export const postgresMigrationsDir = fileURLToPath(new URL('../../../migrations/postgres', import.meta.url));

/** What table code runs SQL on: the pool (each statement on its own) or one client inside a transaction. */
export interface Db {
  query<R extends object = Record<string, unknown>>(text: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
  /** Runs `fn` in one transaction (COMMIT, or ROLLBACK when it throws); inside a transaction, joins it. */
  transaction<T>(fn: (db: Db) => Promise<T>): Promise<T>;
  /** Whether statements run inside a transaction (row locks last until it ends). */
  readonly inTransaction: boolean;
}

// BIGINT (int8) and COUNT(*) come back as strings by default; every number localtune stores fits a double exactly.
const INT8_OID = 20;
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

export function openPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, types, max: 10 });
  // An idle client losing its connection (the server restarted) must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  return pool;
}

function clientDb(client: pg.PoolClient): Db {
  const db: Db = {
    query: (text, params) => client.query(text, params),
    transaction: (fn) => fn(db),
    inTransaction: true,
  };
  return db;
}

export function poolDb(pool: pg.Pool): Db {
  return {
    inTransaction: false,
    query: (text, params) => pool.query(text, params),
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn(clientDb(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
  };
}

// Any constant both engines agree on; it only has to differ from other advisory locks taken on the same database.
const MIGRATION_LOCK = 0x6c74756e; // 'ltun'

/**
 * Brings the database up to the newest migration, each in its own transaction with its bookkeeping row. A session
 * advisory lock serializes nodes that start at once: the second waits, then finds nothing pending. Refuses
 * (MigrationError) unknown or edited migrations, like SQLite. Returns the names of the migrations it applied.
 */
export async function applyPostgresMigrations(pool: pg.Pool, dir: string = postgresMigrationsDir): Promise<string[]> {
  const known = readMigrations(dir);
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        checksum TEXT NOT NULL,
        applied_at BIGINT NOT NULL
      )`);
      const applied = (await client.query<AppliedMigration>('SELECT version, name, checksum FROM schema_migrations ORDER BY version')).rows;
      const pending = pendingMigrations(known, applied);
      for (const m of pending) {
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)',
            [m.version, m.name, m.checksum, Math.floor(Date.now() / 1000)]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw new MigrationError(`migration ${m.name} failed: ${(err as Error).message}; the database was left as it was before it`);
        }
      }
      return pending.map((m) => m.name);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    }
  } finally {
    client.release();
  }
}
