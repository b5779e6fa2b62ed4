// The jobs store: newest-first pages with `after`, the metadata filter, one metrics event per step, one checkpoint per step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FineTuningJobStore, JobRow } from '../../src/store/store.ts';
import { openTestStore } from '../helpers/store.ts';

async function withStore(fn: (store: FineTuningJobStore) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-jobs-store-'));
  const store = await openTestStore(dir);
  try {
  await fn(store.jobs);
  } finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  }
}

function job(id: string, created_at: number, metadata: Record<string, string> | null, project = 'p'): JobRow {
  return {
  id, project, created_at, status: 'queued', model: 'm', base_model: 'm', start_model: null, method: 'supervised',
  training_file: 'file-a', validation_file: null, hyperparameters: '{}', resolved_hyperparameters: null, lora: '{}',
  suffix: null, seed: 1, metadata: metadata && JSON.stringify(metadata), fine_tuned_model: null, finished_at: null,
  error_code: null, error_message: null, error_param: null, trained_tokens: null, total_steps: null,
  estimated_finish: null, result_file: null, queued_at: created_at, base_precision: 'fp32', owner: null, lease_expires_at: null,
  };
}

test('jobs list newest first in pages, filtered by metadata pairs or by having none, per project', () => withStore(async (store) => {
  await store.insert(job('a', 1, { team: 'x', env: 'prod' }), []);
  await store.insert(job('b', 2, { team: 'y' }), []);
  await store.insert(job('c', 2, null), []);
  await store.insert(job('d', 3, { team: 'x' }), []);
  await store.insert(job('e', 4, { team: 'x' }, 'other'), []);
  const ids = async (q: Parameters<typeof store.list>[1]) => (await store.list('p', q))!.rows.map((r) => r.id);
  assert.deepEqual(await ids({ limit: 10 }), ['d', 'c', 'b', 'a']);
  const first = (await store.list('p', { limit: 2 }))!;
  assert.deepEqual([first.rows.map((r) => r.id), first.hasMore], [['d', 'c'], true]);
  const second = (await store.list('p', { limit: 2, after: 'c' }))!;
  assert.deepEqual([second.rows.map((r) => r.id), second.hasMore], [['b', 'a'], false]);
  assert.deepEqual(await ids({ limit: 10, metadata: { team: 'x' } }), ['d', 'a']);
  assert.deepEqual(await ids({ limit: 10, metadata: { team: 'x', env: 'prod' } }), ['a']);
  assert.deepEqual(await ids({ limit: 10, metadata: null }), ['c']);
  assert.equal(await store.list('p', { limit: 10, after: 'e' }), undefined, 'another project\'s job is no cursor');
}));

test('a step reported again replaces its metrics event; events page newest first; a checkpoint step is stored once', () => withStore(async (store) => {
  await store.insert(job('j', 1, null), [{ message: 'Created' }]);
  await store.putMetricsEvent('j', 1, 'Step 1/2: training loss=2.00', { step: 1, train_loss: 2 });
  await store.putMetricsEvent('j', 2, 'Step 2/2: training loss=1.00', { step: 2, train_loss: 1 });
  await store.putMetricsEvent('j', 2, 'Step 2/2: training loss=1.50', { step: 2, train_loss: 1.5 });
  await store.addEvent('j', { message: 'Done' });
  const all = (await store.listEvents('j', { limit: 10 }))!.rows;
  assert.deepEqual(all.map((e) => e.message), ['Done', 'Step 2/2: training loss=1.50', 'Step 1/2: training loss=2.00', 'Created']);
  const page = (await store.listEvents('j', { limit: 2, after: all[1]!.id }))!;
  assert.deepEqual([page.rows.map((e) => e.message), page.hasMore], [['Step 1/2: training loss=2.00', 'Created'], false]);
  assert.deepEqual(await store.stepMetrics('j'), [{ step: 1, train_loss: 2 }, { step: 2, train_loss: 1.5 }]);

  const ckpt = { id: 'ftckpt_1', job_id: 'j', created_at: 1, step_number: 2, fine_tuned_model_checkpoint: 'ft:x', metrics: '{}' };
  assert.equal(await store.insertCheckpoint(ckpt), true);
  assert.equal(await store.insertCheckpoint({ ...ckpt, id: 'ftckpt_2' }), false);
  assert.deepEqual((await store.checkpoints('j')).map((c) => c.id), ['ftckpt_1']);
}));
