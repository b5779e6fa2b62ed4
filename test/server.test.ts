// Start-up: the server refuses to run on a database its migrations disagree with, and says why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../src/store/sqlite/db.ts';

test('serve exits with a clear message when an applied migration was altered', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-refuse-'));
  try {
    const db = openDatabase(dataDir);
    db.prepare("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1").run();
    db.close();
    const r = spawnSync(process.execPath, ['bin/localtune.js', 'serve', '--port', '0', '--data-dir', dataDir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^localtune: migration 0001_\w+\.sql was edited after it was applied/m);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
