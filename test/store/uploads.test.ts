// The upload state machine in SQL: parts only while pending and unexpired, one completion at a time, atomic finish, sweep and crash reset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nowSeconds } from '../../src/store/ids.ts';
import { openDatabase } from '../../src/store/sqlite/db.ts';
import type { FileRow, Store, UploadRow } from '../../src/store/store.ts';
import { openTestStore } from '../helpers/store.ts';

const upload = (id: string, expires_at = nowSeconds() + 3600): UploadRow => ({
  id, project: 'p', bytes: 2, filename: 'f.bin', mime_type: 'application/octet-stream', purpose: 'user_data',
  created_at: nowSeconds() - 10, expires_at, file_expires_after: null, status: 'pending',
});
const part = (id: string, upload_id: string) => ({ id, upload_id, bytes: 1, created_at: nowSeconds() });
const file = (id: string): FileRow => ({
  id, project: 'p', bytes: 2, created_at: nowSeconds(), expires_at: null, filename: 'f.bin', purpose: 'user_data', status: 'processed', status_details: null,
});

async function withStore(body: (store: Store, dir: string) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-uploads-store-'));
  const store = await openTestStore(dir);
  try {
    await body(store, dir);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('parts are taken only while pending and unexpired; an expired upload reads as expired before the sweep marks it', () => withStore(async ({ uploads }) => {
  await uploads.insert(upload('upload_live'));
  await uploads.insert(upload('upload_old', nowSeconds() - 1));
  assert.equal(await uploads.addPart(part('part_1', 'upload_live')), true);
  assert.equal(await uploads.addPart(part('part_2', 'upload_old')), false);
  assert.equal(await uploads.addPart(part('part_3', 'upload_missing')), false);
  assert.equal((await uploads.get('p', 'upload_old'))?.status, 'expired');
  assert.equal(await uploads.get('other-project', 'upload_live'), undefined);
  assert.equal(await uploads.beginCompletion('upload_old'), false);
  assert.equal(await uploads.cancel('upload_old'), undefined);
  assert.deepEqual((await uploads.parts('upload_live')).map((p) => p.id), ['part_1']);
}));

test('one completion at a time; finishing inserts the File and removes the parts in one transaction', () => withStore(async ({ uploads, files }) => {
  await uploads.insert(upload('upload_a'));
  await uploads.addPart(part('part_a1', 'upload_a'));
  await uploads.addPart(part('part_a2', 'upload_a'));
  assert.equal(await uploads.beginCompletion('upload_a'), true);
  assert.equal(await uploads.beginCompletion('upload_a'), false, 'a second completion is refused');
  assert.equal(await uploads.addPart(part('part_late', 'upload_a')), false, 'no parts while completing');
  assert.equal(await uploads.cancel('upload_a'), undefined, 'no cancel while completing');
  assert.deepEqual(await uploads.sweep(), [], 'the sweep leaves parts being assembled alone');

  // A failing File insert (a duplicate id) rolls the whole finish back.
  await files.insert(file('file-taken'));
  await assert.rejects(uploads.finishCompletion('upload_a', file('file-taken')));
  assert.equal((await uploads.get('p', 'upload_a'))?.status, 'completing');
  assert.equal((await uploads.parts('upload_a')).length, 2);

  assert.deepEqual((await uploads.finishCompletion('upload_a', file('file-new'))).sort(), ['part_a1', 'part_a2']);
  assert.equal((await uploads.get('p', 'upload_a'))?.status, 'completed');
  assert.ok(await files.exists('file-new'));
  assert.equal(await uploads.partExists('part_a1'), false);
  await assert.rejects(uploads.finishCompletion('upload_a', file('file-again')), /not being completed/);
}));

test('a failed completion goes back to pending; a crash mid-completion is reset at start-up; the sweep expires and clears', () => withStore(async ({ uploads }, dir) => {
  await uploads.insert(upload('upload_b'));
  await uploads.addPart(part('part_b', 'upload_b'));
  await uploads.beginCompletion('upload_b');
  await uploads.abortCompletion('upload_b');
  assert.equal((await uploads.get('p', 'upload_b'))?.status, 'pending');

  await uploads.insert(upload('upload_crashed'));
  await uploads.beginCompletion('upload_crashed');
  assert.equal(await uploads.resetInterruptedCompletions(), 1);
  assert.equal((await uploads.get('p', 'upload_crashed'))?.status, 'pending');

  await uploads.insert(upload('upload_stale', nowSeconds() - 1));
  // Written while still pending (as if the part arrived just before the deadline), straight into the embedded engine's table.
  const db = openDatabase(dir);
  db.prepare("INSERT INTO upload_parts (id, upload_id, bytes, created_at) VALUES ('part_stale', 'upload_stale', 1, 0)").run();
  assert.deepEqual(await uploads.cancel('upload_b'), ['part_b']);
  assert.deepEqual(await uploads.sweep(), ['part_stale']);
  assert.equal(db.prepare("SELECT status FROM uploads WHERE id = 'upload_stale'").pluck().get(), 'expired');
  db.close();
  assert.equal(await uploads.partExists('part_stale'), false);
}));
