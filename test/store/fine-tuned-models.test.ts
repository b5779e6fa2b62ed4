import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/store/db.ts';
import { fineTunedModelStore } from '../../src/store/fine-tuned-models.ts';

test('fine-tuned models are scoped to their project and can be deleted once', () => {
  const db = openDatabase(mkdtempSync(join(tmpdir(), 'lt-models-')));
  const models = fineTunedModelStore(db);
  const row = { id: 'ft:base:org::abcd1234', project: 'p1', base_model: 'base', adapter_dir: 'adapters/j/final', job_id: 'ftjob-x', step: null, created_at: 1, base_precision: 'fp32' as const };
  models.insert(row);
  assert.deepEqual(models.get('p1', row.id), row);
  assert.equal(models.get('p2', row.id), undefined);
  assert.deepEqual(models.list('p1'), [row]);
  assert.deepEqual(models.list('p2'), []);
  assert.equal(models.delete('p2', row.id), false);
  assert.equal(models.delete('p1', row.id), true);
  assert.equal(models.get('p1', row.id), undefined);
  db.close();
});
