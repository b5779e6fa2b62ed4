// The store contract on the PostgreSQL engine, each deployment a fresh database on the test server, plus its migrations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore } from '../../../src/store/open.ts';
import { openPostgresStore } from '../../../src/store/postgres/index.ts';
import { applyPostgresMigrations, postgresMigrationsDir } from '../../../src/store/postgres/db.ts';
import { MigrationError } from '../../../src/store/migrations.ts';
import { freshDatabaseUrl, POSTGRES_URL_ENV } from '../../helpers/postgres.ts';
import { defineStoreContract } from './cases.ts';

defineStoreContract({
  name: 'PostgreSQL',
  sharedNodes: true,
  async deployment() {
    const url = await freshDatabaseUrl();
    return { open: (dataDir) => openStore({ dataDir, databaseUrl: url }) };
  },
});

test('PostgreSQL migrations: nodes starting at once migrate once; unknown or edited migrations are refused', async () => {
  const url = await freshDatabaseUrl();
  const pools = [new pg.Pool({ connectionString: url }), new pg.Pool({ connectionString: url })];
  const dir = mkdtempSync(join(tmpdir(), 'localtune-pg-migrations-'));
  try {
    const applied = await Promise.all(pools.map((p) => applyPostgresMigrations(p)));
    assert.deepEqual(applied.map((names) => names.length).sort(), [0, 1], 'one node applies, the other finds nothing pending');
    cpSync(postgresMigrationsDir, dir, { recursive: true });
    writeFileSync(join(dir, '0001_schema.sql'), '-- edited\n', { flag: 'a' });
    await assert.rejects(applyPostgresMigrations(pools[0]!, dir), (err) => err instanceof MigrationError && /edited/.test(err.message));
    rmSync(join(dir, '0001_schema.sql'));
    writeFileSync(join(dir, '0001_other.sql'), 'SELECT 1;');
    await assert.rejects(applyPostgresMigrations(pools[0]!, dir), (err) => err instanceof MigrationError && /does not know/.test(err.message));
    // A failing migration leaves nothing of itself behind.
    cpSync(postgresMigrationsDir, dir, { recursive: true });
    rmSync(join(dir, '0001_other.sql'));
    writeFileSync(join(dir, '0002_broken.sql'), 'CREATE TABLE half_done (x INTEGER); SELECT no_such_column FROM half_done;');
    await assert.rejects(applyPostgresMigrations(pools[0]!, dir), (err) => err instanceof MigrationError && /0002_broken/.test(err.message));
    const tables = await pools[0]!.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done'");
    assert.equal(tables.rowCount, 0);
  } finally {
    await Promise.all(pools.map((p) => p.end()));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('PostgreSQL: a database that cannot be reached is named in the error, without the password', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-pg-unreachable-'));
  try {
    const admin = new URL(process.env[POSTGRES_URL_ENV]!);
    admin.password = 'wrong-secret';
    await assert.rejects(openPostgresStore({ url: admin.toString(), dataDir }), (err: Error) =>
      err.message.startsWith(`PostgreSQL at 127.0.0.1:${admin.port}/postgres: `) && !err.message.includes('wrong-secret'));
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
