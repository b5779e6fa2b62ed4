import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStore } from '../helpers/store.ts';

test('fine-tuned models are scoped to their project and can be deleted once', async () => {
  const store = await openTestStore(mkdtempSync(join(tmpdir(), 'lt-models-')));
  const { models } = store;
  const row = { id: 'ft:base:org::abcd1234', project: 'p1', base_model: 'base', adapter_dir: 'adapters/j/final', job_id: 'ftjob-x', step: null, created_at: 1, base_precision: 'fp32' as const };
  await models.insert(row);
  assert.deepEqual(await models.get('p1', row.id), row);
  assert.equal(await models.get('p2', row.id), undefined);
  assert.deepEqual(await models.list('p1'), [row]);
  assert.deepEqual(await models.list('p2'), []);
  assert.equal(await models.delete('p2', row.id), false);
  assert.equal(await models.delete('p1', row.id), true);
  assert.equal(await models.get('p1', row.id), undefined);
  await store.close();
});
