// `localtune jobs …` against a real server: follow a job's events to its end, list, show, and a refused cancel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { startTestServer } from '../helpers/server.ts';
import { waitForJob } from '../helpers/wait.ts';

const KEY = 'sk-cli-jobs-test-key';

test('jobs events --follow, list, show, pause, resume and cancel talk to a running server with the given key', { timeout: 240_000 }, async () => {
  const server = await startTestServer({ env: { LOCALTUNE_API_KEYS: `ops:${KEY}` } });
  // Asynchronous, so the test's own SDK connections stay serviced while a command runs.
  const jobs = (...args: string[]) => new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['bin/localtune.js', 'jobs', ...args], {
      // The key comes from the environment, the URL from the flag, as the help says either may.
      env: { ...process.env, OPENAI_API_KEY: KEY, OPENAI_BASE_URL: '' },
    }, (err, stdout, stderr) => resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
  });
  try {
    const client = server.client(KEY);
    const file = await client.files.create({ file: createReadStream('scripts/demo/customer-support.jsonl'), purpose: 'fine-tune' });
    const job = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: file.id, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1 } } } });

    const follow = await jobs('events', job.id, '--follow', '--base-url', server.baseURL);
    assert.equal(follow.status, 0, follow.stderr);
    const lines = follow.stdout.trim().split('\n');
    assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ {2}info {3}Created fine-tuning job: /);
    assert.ok(lines.some((l) => l.endsWith('Fine-tuning job started')));
    assert.ok(lines.some((l) => /Step \d+\/\d+: training loss=/.test(l)), 'metrics events are listed');
    const done = await client.fineTuning.jobs.retrieve(job.id);
    assert.equal(lines.at(-1), `job ${job.id} succeeded: ${done.fine_tuned_model}`);

    const list = await jobs('list', '--base-url', server.baseURL);
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, /^ID +STATUS +MODEL +FINE_TUNED_MODEL +CREATED$/m);
    assert.match(list.stdout, new RegExp(`^${job.id} +succeeded +localtune-default +${done.fine_tuned_model} `, 'm'));

    const show = await jobs('show', job.id, '--base-url', server.baseURL);
    assert.equal(show.status, 0, show.stderr);
    assert.equal((JSON.parse(show.stdout) as { status: string }).status, 'succeeded');

    const cancel = await jobs('cancel', job.id, '--base-url', server.baseURL);
    assert.equal(cancel.status, 1);
    assert.match(cancel.stderr, new RegExp(`^localtune: POST /fine_tuning/jobs/${job.id}/cancel: 400 `));

    // A long job: pause it while it runs, resume it, then cancel it.
    const long = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: file.id, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 50 } } } });
    await waitForJob(client, long.id, { until: (j) => j.status === 'running', what: 'running', context: () => server.output().slice(-4000) });
    for (const [action, status] of [['pause', 'paused'], ['resume', 'queued'], ['cancel', 'cancelled']] as const) {
      const r = await jobs(action, long.id, '--base-url', server.baseURL);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `job ${long.id} is now ${status}\n`);
    }

    const wrongKey = await jobs('list', '--base-url', server.baseURL, '--api-key', 'sk-not-a-key');
    assert.equal(wrongKey.status, 1);
    assert.match(wrongKey.stderr, /401 Incorrect API key provided/);
  } finally {
    await server.stop();
  }
});
