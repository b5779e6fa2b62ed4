// The job state machine: every transition from every status, applied with its event in one transaction or refused with nothing changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobRow, JobStatus } from '../../src/store/store.ts';
import { openTestStore } from '../helpers/store.ts';
import { applyTransition, TRANSITIONS, TransitionRefused, type TransitionName } from '../../src/jobs/lifecycle.ts';

const STATUSES: JobStatus[] = ['validating_files', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'];

function jobRow(id: string, status: JobStatus, project = 'p'): JobRow {
  return {
    id, project, created_at: 1, status, model: 'm', base_model: 'm', start_model: null, method: 'supervised',
    training_file: 'file-a', validation_file: null, hyperparameters: '{}', resolved_hyperparameters: null,
    lora: '{}', suffix: null, seed: 1, metadata: null, fine_tuned_model: null, finished_at: null,
    error_code: null, error_message: null, error_param: null, trained_tokens: null, total_steps: null,
    estimated_finish: null, result_file: null, queued_at: null, base_precision: 'fp32', owner: null, lease_expires_at: null,
  };
}

test('each transition moves exactly the statuses the table lists, with one event, and refuses the others unchanged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-lifecycle-'));
  const opened = await openTestStore(dir);
  try {
    const store = opened.jobs;
    let n = 0;
    for (const name of Object.keys(TRANSITIONS) as TransitionName[]) {
      const { from, to } = TRANSITIONS[name];
      for (const status of STATUSES) {
        const id = `ftjob-${n++}`;
        await store.insert(jobRow(id, status), []);
        const events = async () => (await store.listEvents(id, { limit: 100 }))!.rows;
        if ((from as readonly JobStatus[]).includes(status)) {
          const row = await applyTransition(store, id, name, { message: `did ${name}` }, { finished_at: 7 });
          assert.equal(row.status, to, `${name} from ${status}`);
          assert.equal((await store.getById(id))!.finished_at, 7);
          assert.deepEqual((await events()).map((e) => e.message), [`did ${name}`]);
        } else {
          await assert.rejects(() => applyTransition(store, id, name, { message: 'never' }, { finished_at: 7 }),
            (e: unknown) => e instanceof TransitionRefused && e.status === status && e.message.includes(`its status is ${status}`), `${name} from ${status}`);
          assert.equal((await store.getById(id))!.status, status);
          assert.equal((await store.getById(id))!.finished_at, null);
          assert.deepEqual(await events(), []);
        }
      }
    }
  } finally {
    await opened.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('finished jobs accept no transition at all', () => {
  for (const status of ['succeeded', 'failed', 'cancelled'] as JobStatus[]) {
    for (const t of Object.values(TRANSITIONS)) assert.ok(!(t.from as readonly JobStatus[]).includes(status));
  }
});
