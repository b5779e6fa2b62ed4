// The SQLite connection: one file per data directory, WAL, foreign keys on, migrated before use.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { applyMigrations, migrationsDir } from '../migrations.ts';

export type Db = Database.Database;

/** Opens (creating if needed) `<dataDir>/db.sqlite` and applies pending migrations; throws MigrationError on a bad schema. */
export function openDatabase(dataDir: string, migrations: string = migrationsDir): Db {
  mkdirSync(dataDir, { recursive: true });
  const db = new Database(join(dataDir, 'db.sqlite'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
    // Another process (e.g. `localtune keys create`) may hold the write lock briefly.
    db.pragma('busy_timeout = 5000');
    db.pragma('synchronous = NORMAL');
    applyMigrations(db, migrations);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
