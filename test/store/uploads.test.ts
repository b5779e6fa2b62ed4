// The upload state machine in SQL: parts only while pending and unexpired, one completion at a time, atomic finish, sweep and crash reset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type Db } from '../../src/store/db.ts';
import { fileStore, type FileRow } from '../../src/store/files.ts';
import { nowSeconds } from '../../src/store/ids.ts';
import { uploadStore, type UploadRow } from '../../src/store/uploads.ts';

const upload = (id: string, expires_at = nowSeconds() + 3600): UploadRow => ({
  id, project: 'p', bytes: 2, filename: 'f.bin', mime_type: 'application/octet-stream', purpose: 'user_data',
  created_at: nowSeconds() - 10, expires_at, file_expires_after: null, status: 'pending',
});
const part = (id: string, upload_id: string) => ({ id, upload_id, bytes: 1, created_at: nowSeconds() });
const file = (id: string): FileRow => ({
  id, project: 'p', bytes: 2, created_at: nowSeconds(), expires_at: null, filename: 'f.bin', purpose: 'user_data', status: 'processed', status_details: null,
});

function withDb(body: (db: Db) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-uploads-store-'));
  const db = openDatabase(dir);
  try {
    body(db);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('parts are taken only while pending and unexpired; an expired upload reads as expired before the sweep marks it', () => withDb((db) => {
  const uploads = uploadStore(db);
  uploads.insert(upload('upload_live'));
  uploads.insert(upload('upload_old', nowSeconds() - 1));
  assert.equal(uploads.addPart(part('part_1', 'upload_live')), true);
  assert.equal(uploads.addPart(part('part_2', 'upload_old')), false);
  assert.equal(uploads.addPart(part('part_3', 'upload_missing')), false);
  assert.equal(uploads.get('p', 'upload_old')?.status, 'expired');
  assert.equal(uploads.get('other-project', 'upload_live'), undefined);
  assert.equal(uploads.beginCompletion('upload_old'), false);
  assert.equal(uploads.cancel('upload_old'), undefined);
  assert.deepEqual(uploads.parts('upload_live').map((p) => p.id), ['part_1']);
}));

test('one completion at a time; finishing inserts the File and removes the parts in one transaction', () => withDb((db) => {
  const uploads = uploadStore(db);
  const files = fileStore(db);
  uploads.insert(upload('upload_a'));
  uploads.addPart(part('part_a1', 'upload_a'));
  uploads.addPart(part('part_a2', 'upload_a'));
  assert.equal(uploads.beginCompletion('upload_a'), true);
  assert.equal(uploads.beginCompletion('upload_a'), false, 'a second completion is refused');
  assert.equal(uploads.addPart(part('part_late', 'upload_a')), false, 'no parts while completing');
  assert.equal(uploads.cancel('upload_a'), undefined, 'no cancel while completing');
  assert.deepEqual(uploads.sweep(), [], 'the sweep leaves parts being assembled alone');

  // A failing File insert (a duplicate id) rolls the whole finish back.
  files.insert(file('file-taken'));
  assert.throws(() => uploads.finishCompletion('upload_a', file('file-taken'), files), /UNIQUE/);
  assert.equal(uploads.get('p', 'upload_a')?.status, 'completing');
  assert.equal(uploads.parts('upload_a').length, 2);

  assert.deepEqual(uploads.finishCompletion('upload_a', file('file-new'), files).sort(), ['part_a1', 'part_a2']);
  assert.equal(uploads.get('p', 'upload_a')?.status, 'completed');
  assert.ok(files.exists('file-new'));
  assert.equal(uploads.partExists('part_a1'), false);
  assert.throws(() => uploads.finishCompletion('upload_a', file('file-again'), files), /not being completed/);
}));

test('a failed completion goes back to pending; a crash mid-completion is reset at start-up; the sweep expires and clears', () => withDb((db) => {
  const uploads = uploadStore(db);
  uploads.insert(upload('upload_b'));
  uploads.addPart(part('part_b', 'upload_b'));
  uploads.beginCompletion('upload_b');
  uploads.abortCompletion('upload_b');
  assert.equal(uploads.get('p', 'upload_b')?.status, 'pending');

  uploads.insert(upload('upload_crashed'));
  uploads.beginCompletion('upload_crashed');
  assert.equal(uploads.resetInterruptedCompletions(), 1);
  assert.equal(uploads.get('p', 'upload_crashed')?.status, 'pending');

  uploads.insert(upload('upload_stale', nowSeconds() - 1));
  // Written while still pending (as if the part arrived just before the deadline).
  db.prepare("INSERT INTO upload_parts (id, upload_id, bytes, created_at) VALUES ('part_stale', 'upload_stale', 1, 0)").run();
  assert.deepEqual(uploads.cancel('upload_b'), ['part_b']);
  assert.deepEqual(uploads.sweep(), ['part_stale']);
  assert.equal(db.prepare("SELECT status FROM uploads WHERE id = 'upload_stale'").pluck().get(), 'expired');
  assert.equal(uploads.partExists('part_stale'), false);
}));
