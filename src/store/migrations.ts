// Schema migrations: migrations/NNNN_name.sql applied in order, each with a bookkeeping row, all in one transaction.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import type { Database } from 'better-sqlite3';

export const migrationsDir = fileURLToPath(new URL('../../migrations/sqlite', import.meta.url));

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

/** Thrown when the database and the migrations folder disagree; the server must not start. */
export class MigrationError extends Error {}

const FILE_NAME = /^(\d{4})_[a-z0-9_]+\.sql$/;

/** Reads migrations/ and checks the versions run 1, 2, 3… with no gap or duplicate. */
export function readMigrations(dir: string = migrationsDir): Migration[] {
  const names = readdirSync(dir).filter((n) => n.endsWith('.sql')).sort();
  return names.map((name, i) => {
    const m = FILE_NAME.exec(name);
    if (!m) throw new MigrationError(`migration file '${name}' in ${dir} is not named NNNN_lowercase_name.sql`);
    const version = Number(m[1]);
    if (version !== i + 1) {
      throw new MigrationError(`migration '${name}' has version ${version}, expected ${i + 1}: versions must run 1, 2, 3… with no gap`);
    }
    const sql = readFileSync(join(dir, name), 'utf8');
    return { version, name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
  });
}

/** A migration as the database recorded it when applying it. */
export type AppliedMigration = Pick<Migration, 'version' | 'name' | 'checksum'>;

/**
 * The migrations still to apply, given the ones the database records (oldest first). Refuses (MigrationError) when the
 * database holds a migration this code does not know, or one whose file was edited after it was applied. Both engines
 * check through here, so they refuse the same things.
 */
export function pendingMigrations(known: Migration[], applied: AppliedMigration[]): Migration[] {
  for (const row of applied) {
    const m = known[row.version - 1];
    if (!m || m.name !== row.name) {
      throw new MigrationError(`database has migration ${row.name}, which this version of localtune does not know (newer database or renamed file); refusing to start`);
    }
    if (m.checksum !== row.checksum) {
      throw new MigrationError(`migration ${row.name} was edited after it was applied (checksum mismatch); landed migrations are immutable, add a new one instead`);
    }
  }
  return known.slice(applied.length);
}

/**
 * Brings the SQLite database up to the newest migration. Pending migrations run in one transaction, so a failure
 * leaves the database exactly as it was. Returns the names of the migrations it applied.
 */
export function applyMigrations(db: Database, dir: string = migrationsDir): string[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const applied = db.prepare('SELECT version, name, checksum FROM schema_migrations ORDER BY version').all() as AppliedMigration[];
  const pending = pendingMigrations(readMigrations(dir), applied);
  if (pending.length === 0) return [];
  const record = db.prepare('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)');
  const run = db.transaction(() => {
    for (const m of pending) {
      try {
        db.exec(m.sql);
      } catch (err) {
        throw new MigrationError(`migration ${m.name} failed: ${(err as Error).message}; the database was left unchanged`);
      }
      record.run(m.version, m.name, m.checksum, Math.floor(Date.now() / 1000));
    }
  });
  run();
  return pending.map((m) => m.name);
}
