// The store contract: one set of cases that every engine (SQLite, PostgreSQL) must pass, so both keep one behaviour.
// Each engine's *.test.ts calls defineStoreContract with a way to open stores.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { FileRow, JobRow, Store, UploadRow } from '../../../src/store/store.ts';
import { nowSeconds } from '../../../src/store/ids.ts';
import { waitFor } from '../../helpers/wait.ts';

export interface StoreEngine {
  name: string;
  /**
   * A fresh, empty deployment; `open(dataDir)` opens a node of it with its own data directory. Nodes of one deployment
   * share their metadata when `sharedNodes` is set (PostgreSQL); otherwise each data directory is its own deployment.
   */
  deployment(): Promise<{ open(dataDir: string): Promise<Store> }>;
  sharedNodes: boolean;
}

export function file(id: string, created_at: number, o: Partial<FileRow> = {}): FileRow {
  return {
    id, project: 'p', bytes: 10, created_at, expires_at: null, filename: `${id}.jsonl`, purpose: 'fine-tune',
    status: 'processed', status_details: null, ...o,
  };
}

export function job(id: string, created_at: number, o: Partial<JobRow> = {}): JobRow {
  return {
    id, project: 'p', created_at, status: 'queued', model: 'base', base_model: 'base', start_model: null, method: 'supervised',
    training_file: 'file-t', validation_file: null, hyperparameters: '{}', resolved_hyperparameters: null, lora: '{}',
    base_precision: 'fp32', suffix: null, seed: 1, metadata: null, fine_tuned_model: null, finished_at: null,
    error_code: null, error_message: null, error_param: null, trained_tokens: null, total_steps: null,
    estimated_finish: null, result_file: null, queued_at: created_at, owner: null, lease_expires_at: null, ...o,
  };
}

function upload(id: string, o: Partial<UploadRow> = {}): UploadRow {
  const now = nowSeconds();
  return {
    id, project: 'p', bytes: 6, filename: 'u.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune', created_at: now,
    expires_at: now + 3600, file_expires_after: null, status: 'pending', ...o,
  };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const ids = (rows: { id: string }[] | undefined) => rows?.map((r) => r.id);

export function defineStoreContract(engine: StoreEngine): void {
  describe(`store contract: ${engine.name}`, () => {
    const dirs: string[] = [];
    const opened: Store[] = [];
    const newDataDir = () => {
      const dir = mkdtempSync(join(tmpdir(), 'localtune-contract-'));
      dirs.push(dir);
      return dir;
    };
    const track = (store: Store) => (opened.push(store), store);
    /** A fresh deployment's first node. */
    const fresh = async () => {
      const dep = await engine.deployment();
      return track(await dep.open(newDataDir()));
    };
    after(async () => {
      for (const s of opened) await s.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    test('files: get skips expired and other projects; list pages both ways, ties in insertion order, by purpose', async () => {
      const s = await fresh();
      await s.files.insert(file('f1', 100));
      await s.files.insert(file('f2', 200, { purpose: 'batch' }));
      await s.files.insert(file('f3', 200));
      await s.files.insert(file('f4', 300));
      await s.files.insert(file('old', 50, { expires_at: nowSeconds() - 1 }));
      await s.files.insert(file('q1', 100, { project: 'q' }));
      assert.equal((await s.files.get('p', 'f1'))?.filename, 'f1.jsonl');
      assert.deepEqual(await s.files.get('p', 'f1'), file('f1', 100));
      assert.equal(await s.files.get('q', 'f1'), undefined);
      assert.equal(await s.files.get('p', 'old'), undefined, 'an expired file is gone before the sweep');
      const desc = await s.files.list('p', { limit: 2, order: 'desc' });
      assert.deepEqual([ids(desc?.rows), desc?.hasMore], [['f4', 'f3'], true]);
      const desc2 = await s.files.list('p', { limit: 2, order: 'desc', after: 'f3' });
      assert.deepEqual([ids(desc2?.rows), desc2?.hasMore], [['f2', 'f1'], false]);
      const asc = await s.files.list('p', { limit: 10, order: 'asc', after: 'f2' });
      assert.deepEqual(ids(asc?.rows), ['f3', 'f4']);
      assert.deepEqual(ids((await s.files.list('p', { limit: 10, order: 'asc', purpose: 'batch' }))?.rows), ['f2']);
      assert.equal(await s.files.list('p', { limit: 10, order: 'asc', after: 'q1' }), undefined, 'another project\'s file is no cursor');
      assert.equal(await s.files.list('p', { limit: 10, order: 'asc', after: 'nope' }), undefined);
      assert.equal(await s.files.exists('q1'), true);
      assert.equal(await s.files.delete('p', 'q1'), false);
      assert.equal(await s.files.delete('q', 'q1'), true);
      assert.equal(await s.files.exists('q1'), false);
    });

    test('files: deleteExpired spares files an unfinished job still reads', async () => {
      const s = await fresh();
      const past = nowSeconds() - 10;
      await s.files.insert(file('gone', 1, { expires_at: past }));
      await s.files.insert(file('training', 1, { expires_at: past }));
      await s.files.insert(file('validation', 1, { expires_at: past }));
      await s.files.insert(file('finished', 1, { expires_at: past }));
      await s.files.insert(file('kept', 1, { expires_at: nowSeconds() + 3600 }));
      await s.jobs.insert(job('j1', 1, { status: 'running', training_file: 'training', validation_file: 'validation' }), []);
      await s.jobs.insert(job('j2', 1, { status: 'succeeded', training_file: 'finished' }), []);
      assert.deepEqual((await s.files.deleteExpired()).sort(), ['finished', 'gone']);
      assert.equal(await s.files.exists('training'), true);
      assert.equal(await s.files.exists('kept'), true);
    });

    test('uploads: parts while pending; one completion at a time; completion makes the File; cancel; sweep; expiry', async () => {
      const s = await fresh();
      const now = nowSeconds();
      await s.uploads.insert(upload('u1'));
      assert.equal(await s.uploads.addPart({ id: 'part-a', upload_id: 'u1', bytes: 3, created_at: now }), true);
      assert.equal(await s.uploads.addPart({ id: 'part-b', upload_id: 'u1', bytes: 3, created_at: now }), true);
      assert.deepEqual(ids(await s.uploads.parts('u1')), ['part-a', 'part-b']);
      assert.equal(await s.uploads.partExists('part-b'), true);
      assert.equal(await s.uploads.beginCompletion('u1'), true);
      assert.equal((await s.uploads.get('p', 'u1'))?.status, 'completing');
      assert.equal(await s.uploads.beginCompletion('u1'), false, 'one completion at a time');
      assert.equal(await s.uploads.addPart({ id: 'part-c', upload_id: 'u1', bytes: 1, created_at: now }), false);
      assert.equal(await s.uploads.cancel('u1'), undefined, 'a completing upload cannot be cancelled');
      await s.uploads.abortCompletion('u1');
      assert.equal((await s.uploads.get('p', 'u1'))?.status, 'pending');
      assert.equal(await s.uploads.beginCompletion('u1'), true);
      assert.deepEqual((await s.uploads.finishCompletion('u1', file('file-u1', now))).sort(), ['part-a', 'part-b']);
      assert.equal((await s.uploads.get('p', 'u1'))?.status, 'completed');
      assert.equal((await s.files.get('p', 'file-u1'))?.id, 'file-u1');
      assert.deepEqual(await s.uploads.parts('u1'), []);
      await assert.rejects(s.uploads.finishCompletion('u1', file('file-again', now)));
      assert.equal(await s.files.exists('file-again'), false, 'a refused completion inserts no File');

      await s.uploads.insert(upload('u2'));
      await s.uploads.addPart({ id: 'part-d', upload_id: 'u2', bytes: 6, created_at: now });
      assert.deepEqual(await s.uploads.cancel('u2'), ['part-d']);
      assert.equal(await s.uploads.cancel('u2'), undefined);
      assert.equal((await s.uploads.get('p', 'u2'))?.status, 'cancelled');
      assert.equal(await s.uploads.get('q', 'u2'), undefined);

      await s.uploads.insert(upload('u3', { expires_at: now - 1 }));
      assert.equal((await s.uploads.get('p', 'u3'))?.status, 'expired', 'expired reads as such before the sweep');
      assert.equal(await s.uploads.addPart({ id: 'part-e', upload_id: 'u3', bytes: 1, created_at: now }), false);
      assert.equal(await s.uploads.beginCompletion('u3'), false);
      await s.uploads.insert(upload('u4'));
      await s.uploads.addPart({ id: 'part-f', upload_id: 'u4', bytes: 1, created_at: now });
      assert.deepEqual(await s.uploads.sweep(), []);
      assert.equal(await s.uploads.partExists('part-f'), true, 'the sweep leaves pending uploads alone');
    });

    test('uploads: the sweep expires pending uploads and removes their parts; interrupted completions go back to pending', async () => {
      const s = await fresh();
      const now = nowSeconds();
      await s.uploads.insert(upload('u1'));
      await s.uploads.addPart({ id: 'part-a', upload_id: 'u1', bytes: 6, created_at: now });
      assert.equal(await s.uploads.beginCompletion('u1'), true);
      assert.equal(await s.uploads.resetInterruptedCompletions(), 1);
      assert.equal((await s.uploads.get('p', 'u1'))?.status, 'pending');
      assert.equal(await s.uploads.resetInterruptedCompletions(), 0);
      // Expiring two seconds from now: the part gets in, then the sweep is polled until the expiry passes.
      await s.uploads.insert(upload('u2', { expires_at: now + 2 }));
      assert.equal(await s.uploads.addPart({ id: 'part-b', upload_id: 'u2', bytes: 6, created_at: now }), true);
      const swept = await waitFor('the upload to expire', async () => {
        const removed = await s.uploads.sweep();
        return removed.length > 0 && removed;
      }, { timeoutMs: 10_000, intervalMs: 200 });
      assert.deepEqual(swept, ['part-b']);
      assert.equal((await s.uploads.get('p', 'u2'))?.status, 'expired');
      assert.equal(await s.uploads.partExists('part-b'), false);
      assert.equal(await s.uploads.partExists('part-a'), true, 'a pending upload keeps its parts');
    });

    test('jobs: insert with events, get per project, list newest first in pages, metadata filter', async () => {
      const s = await fresh();
      await s.jobs.insert(job('a', 1, { metadata: JSON.stringify({ team: 'x', env: 'prod' }) }), [{ message: 'Created' }, { message: 'Validating', level: 'warn' }]);
      await s.jobs.insert(job('b', 2, { metadata: JSON.stringify({ team: 'y' }) }), []);
      await s.jobs.insert(job('c', 2), []);
      await s.jobs.insert(job('d', 3, { metadata: JSON.stringify({ team: 'x' }) }), []);
      await s.jobs.insert(job('e', 4, { project: 'other', metadata: JSON.stringify({ team: 'x' }) }), []);
      assert.deepEqual(await s.jobs.get('p', 'a'), job('a', 1, { metadata: JSON.stringify({ team: 'x', env: 'prod' }) }));
      assert.equal(await s.jobs.get('p', 'e'), undefined);
      assert.equal((await s.jobs.getById('e'))?.project, 'other');
      const events = await s.jobs.listEvents('a', { limit: 10 });
      assert.deepEqual(events?.rows.map((e) => [e.message, e.level, e.type, e.data]), [['Validating', 'warn', 'message', null], ['Created', 'info', 'message', null]]);
      const list = async (q: Parameters<Store['jobs']['list']>[1]) => ids((await s.jobs.list('p', q))?.rows);
      assert.deepEqual(await list({ limit: 10 }), ['d', 'c', 'b', 'a']);
      const first = await s.jobs.list('p', { limit: 2 });
      assert.deepEqual([ids(first?.rows), first?.hasMore], [['d', 'c'], true]);
      const second = await s.jobs.list('p', { limit: 2, after: 'c' });
      assert.deepEqual([ids(second?.rows), second?.hasMore], [['b', 'a'], false]);
      assert.deepEqual(await list({ limit: 10, metadata: { team: 'x' } }), ['d', 'a']);
      assert.deepEqual(await list({ limit: 10, metadata: { team: 'x', env: 'prod' } }), ['a']);
      assert.deepEqual(await list({ limit: 10, metadata: { team: 'z' } }), []);
      assert.deepEqual(await list({ limit: 10, metadata: {} }), ['d', 'c', 'b', 'a']);
      assert.deepEqual(await list({ limit: 10, metadata: null }), ['c']);
      assert.equal(await s.jobs.list('p', { limit: 10, after: 'e' }), undefined, 'another project\'s job is no cursor');
    });

    test('jobs: transition and update only from allowed statuses; status order and counts', async () => {
      const s = await fresh();
      await s.jobs.insert(job('a', 5, { status: 'validating_files', queued_at: null }), []);
      await s.jobs.insert(job('b', 1, { queued_at: 30 }), []);
      await s.jobs.insert(job('c', 2, { queued_at: 20 }), []);
      const moved = await s.jobs.transition('a', ['validating_files'], 'queued', { queued_at: 10, total_steps: 4 }, { message: 'Queued', data: { n: 1 } });
      assert.deepEqual([moved?.status, moved?.queued_at, moved?.total_steps], ['queued', 10, 4]);
      assert.equal(await s.jobs.transition('a', ['validating_files'], 'running', {}, { message: 'never' }), undefined);
      const events = (await s.jobs.listEvents('a', { limit: 10 }))?.rows;
      assert.deepEqual(events?.map((e) => [e.message, e.data === null ? null : JSON.parse(e.data)]), [['Queued', { n: 1 }]], 'a refused transition adds no event');
      assert.deepEqual(ids(await s.jobs.inStatus(['queued'])), ['a', 'c', 'b']);
      assert.equal(await s.jobs.update('a', ['running'], { trained_tokens: 5 }), false);
      assert.equal(await s.jobs.update('a', ['queued'], { trained_tokens: 5, error_message: null }), true);
      assert.equal((await s.jobs.getById('a'))?.trained_tokens, 5);
      await s.jobs.transition('b', ['queued'], 'running', {}, { message: 'Started' });
      assert.deepEqual(await s.jobs.countByStatus(), { queued: 2, running: 1 });
    });

    test('jobs: a step reported again replaces its metrics event; events and checkpoints page newest first', async () => {
      const s = await fresh();
      await s.jobs.insert(job('j', 1), [{ message: 'Created' }]);
      await s.jobs.putMetricsEvent('j', 1, 'step 1', { step: 1, train_loss: 2 });
      await s.jobs.putMetricsEvent('j', 2, 'step 2', { step: 2, train_loss: 1 });
      await s.jobs.putMetricsEvent('j', 2, 'step 2 again', { step: 2, train_loss: 1.5 });
      await s.jobs.addEvent('j', { message: 'Done' });
      const all = (await s.jobs.listEvents('j', { limit: 10 }))!.rows;
      assert.deepEqual(all.map((e) => [e.message, e.type]), [['Done', 'message'], ['step 2 again', 'metrics'], ['step 1', 'metrics'], ['Created', 'message']]);
      const page = await s.jobs.listEvents('j', { limit: 2, after: all[1]!.id });
      assert.deepEqual([page?.rows.map((e) => e.message), page?.hasMore], [['step 1', 'Created'], false]);
      assert.equal(await s.jobs.listEvents('j', { limit: 2, after: 'ftevent-nope' }), undefined);
      assert.deepEqual(await s.jobs.stepMetrics('j'), [{ step: 1, train_loss: 2 }, { step: 2, train_loss: 1.5 }]);

      const checkpoint = (id: string, step: number) => ({ id, job_id: 'j', created_at: 1, step_number: step, fine_tuned_model_checkpoint: `ft:x:ckpt-step-${step}`, metrics: '{}' });
      assert.equal(await s.jobs.insertCheckpoint(checkpoint('c2', 2)), true);
      assert.equal(await s.jobs.insertCheckpoint(checkpoint('c1', 1)), true);
      assert.equal(await s.jobs.insertCheckpoint(checkpoint('c2-again', 2)), false, 'one checkpoint per step');
      await s.jobs.insertCheckpoint(checkpoint('c3', 3));
      assert.deepEqual(ids(await s.jobs.checkpoints('j')), ['c1', 'c2', 'c3']);
      const cp = await s.jobs.listCheckpoints('j', { limit: 1, after: 'c3' });
      assert.deepEqual([ids(cp?.rows), cp?.hasMore], [['c2'], true]);
      assert.equal(await s.jobs.listCheckpoints('j', { limit: 1, after: 'nope' }), undefined);
      await s.jobs.renameCheckpointModel('c3', 'ft:x');
      await s.jobs.deleteCheckpoint('c1');
      assert.deepEqual((await s.jobs.checkpoints('j')).map((c) => [c.id, c.fine_tuned_model_checkpoint]), [['c2', 'ft:x:ckpt-step-2'], ['c3', 'ft:x']]);
    });

    test('jobs: lockClaimable takes unheld jobs of the given statuses and bases, oldest queued first; renewLeases', async () => {
      const s = await fresh();
      const now = Date.now();
      await s.jobs.insert(job('free', 1, { queued_at: 30 }), []);
      await s.jobs.insert(job('older', 2, { queued_at: 10 }), []);
      await s.jobs.insert(job('other-base', 3, { base_model: 'elsewhere', queued_at: 5 }), []);
      await s.jobs.insert(job('held', 4, { status: 'running', owner: 'node-b', lease_expires_at: now + 60_000, queued_at: 1 }), []);
      await s.jobs.insert(job('lapsed', 5, { status: 'running', owner: 'node-c', lease_expires_at: now - 1, queued_at: 2 }), []);
      await s.jobs.insert(job('mine', 6, { status: 'running', owner: 'node-a', lease_expires_at: now + 60_000, queued_at: 3 }), []);
      await s.jobs.insert(job('done', 7, { status: 'succeeded', owner: 'node-a', lease_expires_at: now + 60_000, queued_at: 4 }), []);
      await s.jobs.insert(job('paused', 8, { status: 'paused', owner: 'node-a', lease_expires_at: now + 60_000, queued_at: 4 }), []);
      const claim = (q: Partial<Parameters<Store['jobs']['lockClaimable']>[0]>) =>
        s.transaction(async (tx) => ids(await tx.jobs.lockClaimable({ statuses: ['queued', 'running'], baseModels: ['base'], now, limit: 10, ...q })));
      assert.deepEqual(await claim({}), ['lapsed', 'older', 'free']);
      await assert.rejects(s.jobs.lockClaimable({ statuses: ['queued'], baseModels: ['base'], now, limit: 1 }), /inside Store.transaction/);
      assert.deepEqual(await claim({ reclaimFrom: 'node-a' }), ['lapsed', 'mine', 'older', 'free']);
      assert.deepEqual(await claim({ statuses: ['queued'], limit: 1 }), ['older']);
      assert.deepEqual(await claim({ baseModels: ['elsewhere', 'base'], statuses: ['queued'] }), ['other-base', 'older', 'free']);

      const claimed = await s.transaction(async (tx) => {
        const [first] = await tx.jobs.lockClaimable({ statuses: ['queued'], baseModels: ['base'], now, limit: 1 });
        await tx.jobs.transition(first!.id, ['queued'], 'running', { owner: 'node-a', lease_expires_at: now + 1000 }, { message: 'Started' });
        return first!.id;
      });
      assert.equal(claimed, 'older');
      const renewed = await s.jobs.renewLeases('node-a', now + 90_000);
      assert.deepEqual(renewed.map((r) => [r.id, r.status]).sort(), [['mine', 'running'], ['older', 'running']]);
      assert.equal((await s.jobs.getById('older'))?.lease_expires_at, now + 90_000);
      assert.equal((await s.jobs.getById('done'))?.lease_expires_at, now + 60_000, 'finished jobs keep their lease as it was');
      assert.equal((await s.jobs.getById('paused'))?.lease_expires_at, now + 60_000, 'a paused job is not worked on: no renewal');
      assert.equal((await s.jobs.getById('held'))?.lease_expires_at, now + 60_000, 'another owner\'s lease is not renewed');
    });

    test('models: per project, oldest first, adapter dirs in use', async () => {
      const s = await fresh();
      const model = (id: string, project: string, created_at: number, adapter_dir: string) =>
        ({ id, project, base_model: 'base', adapter_dir, job_id: null, step: null, created_at, base_precision: 'nf4' as const });
      await s.models.insert(model('ft:b', 'p', 2, 'jobs/x/final'));
      await s.models.insert(model('ft:a', 'p', 2, 'jobs/y/final'));
      await s.models.insert(model('ft:c', 'q', 1, 'jobs/x/final'));
      assert.deepEqual(await s.models.get('p', 'ft:b'), model('ft:b', 'p', 2, 'jobs/x/final'));
      assert.equal(await s.models.get('q', 'ft:b'), undefined);
      assert.deepEqual(ids(await s.models.list('p')), ['ft:b', 'ft:a']);
      assert.deepEqual([...(await s.models.adapterDirsInUse())].sort(), ['jobs/x/final', 'jobs/y/final']);
      assert.equal(await s.models.delete('q', 'ft:b'), false);
      assert.equal(await s.models.delete('p', 'ft:b'), true);
      assert.deepEqual(ids(await s.models.list('p')), ['ft:a']);
    });

    test('keys: stored hashed, revocable, mapped to their project', async () => {
      const s = await fresh();
      assert.equal(await s.keys.hasActiveKeys(), false);
      const a = await s.keys.create('alpha');
      const b = await s.keys.create('beta');
      assert.match(a.key, /^sk-lt-/);
      assert.equal(a.row.key_prefix, a.key.slice(0, 10));
      assert.equal(await s.keys.projectOf(b.key), 'beta');
      assert.equal(await s.keys.projectOf('sk-lt-unknown'), undefined);
      assert.deepEqual(ids(await s.keys.list()), [a.row.id, b.row.id]);
      assert.equal(await s.keys.revoke(a.row.id), true);
      assert.equal(await s.keys.revoke(a.row.id), false);
      assert.equal(await s.keys.projectOf(a.key), undefined);
      assert.notEqual((await s.keys.list())[0]?.revoked_at, null);
      assert.equal(await s.keys.hasActiveKeys(), true);
    });

    test('transaction: commits together, or rolls everything back when fn throws', async () => {
      const s = await fresh();
      const value = await s.transaction(async (tx) => {
        await tx.files.insert(file('kept', 1));
        await tx.jobs.insert(job('j', 1), [{ message: 'Created' }]);
        return 42;
      });
      assert.equal(value, 42);
      await assert.rejects(s.transaction(async (tx) => {
        await tx.files.insert(file('rolled-back', 1));
        await tx.jobs.transition('j', ['queued'], 'running', {}, { message: 'Started' });
        throw new Error('boom');
      }), /boom/);
      assert.equal(await s.files.exists('kept'), true);
      assert.equal(await s.files.exists('rolled-back'), false);
      assert.equal((await s.jobs.getById('j'))?.status, 'queued');
      assert.equal((await s.jobs.listEvents('j', { limit: 10 }))?.rows.length, 1);
    });

    test('blobs: committed from a temp file, streamed back (several chunks), cached locally, removed; parts apart', async () => {
      const s = await fresh();
      // 2.5 MiB: more than one chunk of the chunked engine.
      const big = randomBytes(2.5 * 1024 * 1024);
      const temp = s.blobs.tempPath();
      writeFileSync(temp, big);
      await s.blobs.commit(temp, 'file-big');
      assert.equal(existsSync(temp), false, 'the temp file is gone after commit');
      assert.ok((await readAll(s.blobs.read('file-big'))).equals(big));
      const local = await s.blobs.localPath('file-big');
      assert.ok(readFileSync(local).equals(big));
      await s.blobs.write('file-small', 'hello\n');
      assert.equal((await readAll(s.blobs.read('file-small'))).toString(), 'hello\n');
      await s.blobs.write('file-empty', new Uint8Array());
      assert.equal((await readAll(s.blobs.read('file-empty'))).length, 0);
      await s.parts.write('part-1', 'part');
      await assert.rejects(readAll(s.blobs.read('part-1')), 'parts and files are separate namespaces');
      await s.blobs.remove('file-big');
      await assert.rejects(readAll(s.blobs.read('file-big')));
      assert.throws(() => s.blobs.read('../etc/passwd'));
    });

    test('blobs: recover empties the temp folder and removes blobs whose row never got inserted', async () => {
      const s = await fresh();
      await s.blobs.write('file-known', 'a');
      await s.blobs.write('file-orphan', 'b');
      writeFileSync(s.blobs.tempPath(), 'cut off');
      const known = new Set(['file-known']);
      const result = await s.blobs.recover(async (id) => known.has(id));
      assert.deepEqual(result, { temp: 1, orphans: 1 });
      assert.equal((await readAll(s.blobs.read('file-known'))).toString(), 'a');
      await assert.rejects(readAll(s.blobs.read('file-orphan')));
    });

    test('shared dirs: publish then fetch; remove; unknown and unsafe keys', async () => {
      const s = await fresh();
      const key = 'jobs/ftjob-x/final';
      const dir = s.dirs.localDir(key);
      mkdirSync(join(dir, 'sub'), { recursive: true });
      writeFileSync(join(dir, 'adapter_config.json'), '{"r":8}');
      writeFileSync(join(dir, 'sub', 'weights.bin'), randomBytes(1000));
      await s.dirs.publish(key);
      assert.equal(await s.dirs.fetch(key), dir);
      assert.equal(readFileSync(join(dir, 'adapter_config.json'), 'utf8'), '{"r":8}');
      assert.equal(await s.dirs.fetch('jobs/ftjob-none/final'), undefined);
      await s.dirs.publish('jobs/ftjob-none/final');
      assert.equal(await s.dirs.fetch('jobs/ftjob-none/final'), undefined, 'publishing a folder that is not there publishes nothing');
      await s.dirs.remove(key);
      assert.equal(await s.dirs.fetch(key), undefined);
      assert.equal(existsSync(dir), false);
      assert.throws(() => s.dirs.localDir('../outside'));
    });

    if (engine.sharedNodes) defineSharedNodeCases(engine, newDataDir, track);
  });
}

/** Cases for engines whose nodes share one database: what one node does, another sees. */
function defineSharedNodeCases(engine: StoreEngine, newDataDir: () => string, track: (s: Store) => Store): void {
  let a: Store;
  let b: Store;
  before(async () => {
    const dep = await engine.deployment();
    a = track(await dep.open(newDataDir()));
    b = track(await dep.open(newDataDir()));
  });

  test('two nodes: a locked claimable job is skipped by the other node\'s claim, not waited for', async () => {
    const now = Date.now();
    await a.jobs.insert(job('first', 1, { queued_at: 1 }), []);
    await a.jobs.insert(job('second', 2, { queued_at: 2 }), []);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const query = { statuses: ['queued'] as const, baseModels: ['base'], now, limit: 1 };
    // Should the second claim wait for the first's lock instead of skipping it, this deadline lets the test fail, not hang.
    const deadline = setTimeout(() => release(), 10_000);
    const first = a.transaction(async (tx) => {
      const rows = await tx.jobs.lockClaimable(query);
      locked();
      await held;
      return ids(rows);
    });
    await isLocked;
    const second = await b.transaction(async (tx) => ids(await tx.jobs.lockClaimable({ ...query, limit: 2 })));
    release();
    clearTimeout(deadline);
    assert.deepEqual(await first, ['first']);
    assert.deepEqual(second, ['second'], 'the second claim passes over the row the first holds');
  });

  test('two nodes: blobs written on one are read and cached on the other; removal reaches both', async () => {
    const data = randomBytes(1024 * 1024 + 17);
    await a.blobs.write('file-shared', data);
    assert.ok((await readAll(b.blobs.read('file-shared'))).equals(data));
    const cached = await b.blobs.localPath('file-shared');
    assert.ok(readFileSync(cached).equals(data));
    await b.blobs.remove('file-shared');
    await assert.rejects(readAll(a.blobs.read('file-shared')));
    // The other node's recover drops its stale cached copy but never another node's fresh orphans.
    await b.blobs.write('file-fresh', 'b');
    await a.blobs.recover(async () => false);
    assert.equal((await readAll(a.blobs.read('file-fresh'))).toString(), 'b', 'another node\'s fresh blob is not an orphan here');
  });

  test('two nodes: a directory published on one is fetched by the other, and refetched only when republished', async () => {
    const key = 'jobs/ftjob-shared/final';
    const src = a.dirs.localDir(key);
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'adapter_model.safetensors'), randomBytes(3000));
    writeFileSync(join(src, 'version'), '1');
    await a.dirs.publish(key);
    const dest = await b.dirs.fetch(key);
    assert.equal(dest, b.dirs.localDir(key));
    assert.notEqual(dest, src);
    assert.deepEqual(readdirSync(dest!).sort(), ['adapter_model.safetensors', 'version']);
    assert.ok(readFileSync(join(dest!, 'adapter_model.safetensors')).equals(readFileSync(join(src, 'adapter_model.safetensors'))));
    // A local change on the fetching node marks its copy: an unchanged version is not downloaded again.
    writeFileSync(join(dest!, 'marker'), 'x');
    await b.dirs.fetch(key);
    assert.equal(existsSync(join(dest!, 'marker')), true);
    writeFileSync(join(src, 'version'), '2');
    await a.dirs.publish(key);
    await b.dirs.fetch(key);
    assert.equal(readFileSync(join(dest!, 'version'), 'utf8'), '2');
    assert.equal(existsSync(join(dest!, 'marker')), false, 'a new version replaces the whole folder');
    await a.dirs.remove(key);
    assert.equal(await b.dirs.fetch(key), undefined);
  });
}
