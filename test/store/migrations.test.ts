// The migrations runner: order, atomic failure, refusal on gaps, unknown and edited migrations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { applyMigrations, MigrationError, readMigrations } from '../../src/store/migrations.ts';
import { openDatabase } from '../../src/store/sqlite/db.ts';

function folder(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-mig-'));
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, name), sql);
  return dir;
}

const tables = (db: Database.Database) =>
  (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);

test('applies pending migrations in order with a bookkeeping row each, and only once', () => {
  const dir = folder({
    '0002_b.sql': 'ALTER TABLE a ADD COLUMN y INTEGER;',
    '0001_a.sql': 'CREATE TABLE a (x INTEGER) STRICT;',
  });
  const db = new Database(':memory:');
  assert.deepEqual(applyMigrations(db, dir), ['0001_a.sql', '0002_b.sql']);
  assert.deepEqual(applyMigrations(db, dir), []);
  db.prepare('INSERT INTO a (x, y) VALUES (1, 2)').run();
  const rows = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all();
  assert.deepEqual(rows, [{ version: 1, name: '0001_a.sql' }, { version: 2, name: '0002_b.sql' }]);
  writeFileSync(join(dir, '0003_c.sql'), 'CREATE TABLE c (z TEXT) STRICT;');
  assert.deepEqual(applyMigrations(db, dir), ['0003_c.sql']);
});

test('a failing migration leaves the database exactly as it was', () => {
  const dir = folder({
    '0001_a.sql': 'CREATE TABLE a (x INTEGER) STRICT;',
    '0002_b.sql': 'CREATE TABLE b (x INTEGER) STRICT; INSERT INTO a VALUES (1);',
    '0003_bad.sql': 'CREATE TABLE c (x INTEGER) STRICT; THIS IS NOT SQL;',
  });
  const db = new Database(':memory:');
  assert.throws(() => applyMigrations(db, dir), (err: unknown) =>
    err instanceof MigrationError && /0003_bad\.sql failed/.test(err.message) && /left unchanged/.test(err.message));
  assert.deepEqual(tables(db), ['schema_migrations']);
  assert.equal((db.prepare('SELECT count(*) AS n FROM schema_migrations').get() as { n: number }).n, 0);
});

test('refuses a gap in versions and badly named files', () => {
  assert.throws(() => readMigrations(folder({ '0001_a.sql': '', '0003_c.sql': '' })), /expected 2/);
  assert.throws(() => readMigrations(folder({ '1_a.sql': '' })), /NNNN_lowercase_name/);
});

test('refuses an applied migration that was edited, or one this code does not know', () => {
  const dir = folder({ '0001_a.sql': 'CREATE TABLE a (x INTEGER) STRICT;' });
  const db = new Database(':memory:');
  applyMigrations(db, dir);
  writeFileSync(join(dir, '0001_a.sql'), 'CREATE TABLE a (x INTEGER, y INTEGER) STRICT;');
  assert.throws(() => applyMigrations(db, dir), /0001_a\.sql was edited after it was applied/);

  const older = folder({});
  assert.throws(() => applyMigrations(db, older), /does not know/);
});

test('the real migrations apply to a fresh database with WAL, foreign keys and STRICT tables', () => {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-db-'));
  try {
    const db = openDatabase(dir);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    assert.equal(db.pragma('busy_timeout', { simple: true }), 5000);
    const nonStrict = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE '%STRICT'").all();
    assert.deepEqual(nonStrict, []);
    db.close();
    // Reopening applies nothing new and succeeds.
    openDatabase(dir).close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('0004 stores queued_at in seconds: millisecond values are converted, second values left alone', () => {
  const upTo3 = folder(Object.fromEntries(readMigrations().filter((m) => m.version <= 3).map((m) => [m.name, m.sql])));
  const db = new Database(':memory:');
  applyMigrations(db, upTo3);
  const insert = db.prepare(`INSERT INTO fine_tuning_jobs (id, project, created_at, status, model, base_model, method, training_file, hyperparameters, lora, seed, queued_at)
    VALUES (?, 'p', 1700000000, 'queued', 'm', 'm', 'supervised', 'file-a', '{}', '{}', 1, ?)`);
  insert.run('ms', 1_700_000_123_456);
  insert.run('s', 1_700_000_200);
  insert.run('never', null);
  applyMigrations(db);
  const queuedAt = db.prepare('SELECT id, queued_at FROM fine_tuning_jobs ORDER BY id').all();
  assert.deepEqual(queuedAt, [{ id: 'ms', queued_at: 1_700_000_123 }, { id: 'never', queued_at: null }, { id: 's', queued_at: 1_700_000_200 }]);
});
