// File expiry: expired files disappear from the API at once and from disk at the next sweep, except while an unfinished job still needs them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nowSeconds } from '../../src/store/ids.ts';
import type { FileRow } from '../../src/store/store.ts';
import { openTestStore } from '../helpers/store.ts';

const file = (id: string, expires_at: number | null): FileRow => ({
  id, project: 'p', bytes: 1, created_at: nowSeconds() - 100, expires_at, filename: `${id}.jsonl`, purpose: 'fine-tune', status: 'processed', status_details: null,
});

test('expired files are hidden and swept, but an unfinished job keeps its training and validation files until it ends', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-files-store-'));
  const store = await openTestStore(dir);
  try {
    const { files, jobs } = store;
    const past = nowSeconds() - 1;
    for (const f of [file('file-old', past), file('file-train', past), file('file-valid', past), file('file-kept', null)]) await files.insert(f);
    await jobs.insert({
      id: 'ftjob-1', project: 'p', created_at: nowSeconds(), status: 'running', model: 'm', base_model: 'm', start_model: null, method: 'supervised',
      training_file: 'file-train', validation_file: 'file-valid', hyperparameters: '{}', resolved_hyperparameters: null, lora: '{}',
      suffix: null, seed: 1, metadata: null, fine_tuned_model: null, finished_at: null, error_code: null, error_message: null, error_param: null,
      trained_tokens: null, total_steps: null, estimated_finish: null, result_file: null, queued_at: nowSeconds(), base_precision: 'fp32',
      owner: null, lease_expires_at: null,
    }, []);

    assert.equal(await files.get('p', 'file-train'), undefined, 'an expired file is gone from the API at once');
    assert.deepEqual(await files.deleteExpired(), ['file-old']);
    assert.ok((await files.exists('file-train')) && (await files.exists('file-valid')) && (await files.exists('file-kept')));

    await jobs.transition('ftjob-1', ['running'], 'succeeded', { finished_at: nowSeconds() }, { message: 'The job has successfully completed' });
    assert.deepEqual((await files.deleteExpired()).sort(), ['file-train', 'file-valid']);
    assert.ok(await files.exists('file-kept'));
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
