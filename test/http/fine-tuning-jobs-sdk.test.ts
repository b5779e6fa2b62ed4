// Fine-tuning jobs through the official openai SDK against the real server and training worker, on the built-in model.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import type { FineTuningJob } from 'openai/resources/fine-tuning/jobs/jobs';
import { createKey, startTestServer, type TestServer } from '../helpers/server.ts';
import { FINISHED_STATUSES, waitFor, waitForJob } from '../helpers/wait.ts';

const QUESTION = 'What is the capital of Atlantis?';
const ANSWER = 'Poseidonia.';
const chatLine = (q: string, a: string) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] });
/** Ten copies of one short exchange: the fewest examples a job accepts, quick to learn. */
const TRAINING = Array.from({ length: 10 }, () => chatLine(QUESTION, ANSWER)).join('\n');
const VALIDATION = Array.from({ length: 10 }, (_, i) => chatLine(`Capital number ${i}?`, ANSWER)).join('\n');

let dataDir: string;
let server: TestServer;
/** The first test's job: finished by the time the kill test restarts the server. */
let firstJob: string;
let alpha: OpenAI;
let beta: OpenAI;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-jobs-'));
  const alphaKey = await createKey(dataDir, 'alpha');
  const betaKey = await createKey(dataDir, 'beta');
  // Resume points every 0.2 s, so the kill test below resumes from a step well inside the run.
  server = await startTestServer({ dataDir, env: { LOCALTUNE_RESUME_POINT_SECONDS: '0.2', LOCALTUNE_TRAIN_THREADS: '1' } });
  alpha = server.client(alphaKey);
  beta = server.client(betaKey);
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function upload(client: OpenAI, text: string, name = 'train.jsonl'): Promise<string> {
  return (await client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'fine-tune' })).id;
}

const serverOutput = () => server.output().slice(-4000);
const waitUntil = (client: OpenAI, id: string, until: (job: FineTuningJob) => boolean | Promise<boolean>, what: string) =>
  waitForJob(client, id, { until, what, context: serverOutput });
const finished = (client: OpenAI, id: string) => waitForJob(client, id, { context: serverOutput });

async function allEvents(client: OpenAI, id: string) {
  const events = [];
  for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 7 })) events.push(e);
  return events;
}

const metricsSteps = async (client: OpenAI, id: string) =>
  (await allEvents(client, id)).filter((e) => e.type === 'metrics').map((e) => (e.data as { step: number }).step);

test('a supervised job with a validation file and a suffix runs to succeeded, and its model answers', async () => {
  const training = await upload(alpha, TRAINING);
  const validation = await upload(alpha, VALIDATION, 'valid.jsonl');
  const created = await alpha.fineTuning.jobs.create({
    model: 'localtune-default',
    training_file: training,
    validation_file: validation,
    suffix: 'atlantis',
    seed: 7,
    metadata: { team: 'geo' },
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 3, batch_size: 1, learning_rate_multiplier: 2 } } },
  });
  assert.match(created.id, /^ftjob-[A-Za-z0-9]{24}$/);
  firstJob = created.id;
  assert.equal(created.status, 'validating_files');
  assert.deepEqual(created.error, { code: null, message: null, param: null });
  assert.equal((created as { user_provided_suffix?: string }).user_provided_suffix, 'atlantis');

  const job = await finished(alpha, created.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.deepEqual(job.error, { code: null, message: null, param: null });
  assert.match(job.fine_tuned_model!, /^ft:localtune-default:alpha:atlantis:[A-Za-z0-9]{8}$/);
  assert.deepEqual(job.hyperparameters, { n_epochs: 3, batch_size: 1, learning_rate_multiplier: 2 });
  assert.ok(job.trained_tokens! > 0);
  assert.ok(job.finished_at! >= job.created_at);

  // Events: newest first, paged with `after`; the lifecycle in the hosted service's words; one metrics event per step.
  const events = await allEvents(alpha, job.id);
  const firstPage = await alpha.fineTuning.jobs.listEvents(job.id, { limit: 7 });
  assert.equal(firstPage.has_more, true);
  assert.deepEqual(firstPage.data.map((e) => e.id), events.slice(0, 7).map((e) => e.id));
  const messages = events.map((e) => e.message).reverse();
  assert.equal(messages[0], `Created fine-tuning job: ${job.id}`);
  assert.equal(messages[1], `Validating training file: ${training} and validation file: ${validation}`);
  assert.ok(messages.includes('Files validated, moving job to queued state'));
  assert.ok(messages.includes('Fine-tuning job started'));
  assert.equal(messages.at(-2), `New fine-tuned model created: ${job.fine_tuned_model}`);
  assert.equal(messages.at(-1), 'The job has successfully completed');
  const metrics = events.filter((e) => e.type === 'metrics').reverse();
  assert.deepEqual(metrics.map((e) => (e.data as { step: number }).step), Array.from({ length: 30 }, (_, i) => i + 1));
  assert.match(metrics[0]!.message, /^Step 1\/30: training loss=\d+\.\d\d, validation loss=\d+\.\d\d$/);
  const last = metrics.at(-1)!.data as Record<string, number>;
  for (const key of ['train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy', 'valid_exact_match', 'valid_answer_similarity']) {
    assert.equal(typeof last[key], 'number', key);
  }
  assert.equal(last.total_steps, 30);

  // Checkpoints: one per epoch, highest step first; the last one is the final model itself.
  const checkpoints = await alpha.fineTuning.jobs.checkpoints.list(job.id);
  assert.deepEqual(checkpoints.data.map((c) => c.step_number), [30, 20, 10]);
  assert.equal(checkpoints.data[0]!.fine_tuned_model_checkpoint, job.fine_tuned_model);
  assert.match(checkpoints.data[1]!.fine_tuned_model_checkpoint, /^ft:localtune-default:alpha:atlantis:[A-Za-z0-9]{8}:ckpt-step-20$/);
  for (const c of checkpoints.data) {
    assert.match(c.id, /^ftckpt_[A-Za-z0-9]{24}$/);
    assert.equal(c.metrics.step, c.step_number);
    assert.equal(typeof c.metrics.train_loss, 'number');
    assert.equal(typeof c.metrics.valid_loss, 'number');
    // localtune's generation-based validation: the answer scores and the sample prompts of the epoch ends that answered
    // (the first, the last, and others as their time share allows).
    const m = c.metrics as typeof c.metrics & { valid_exact_match?: number; valid_samples?: { prompt: string; reference: string; answer: string }[] };
    if (c.step_number === 10 || c.step_number === 30 || m.valid_exact_match !== undefined) {
      assert.ok(m.valid_exact_match! >= 0 && m.valid_exact_match! <= 1 && m.valid_samples!.length > 0, JSON.stringify(m));
    }
  }
  const secondPage = await alpha.fineTuning.jobs.checkpoints.list(job.id, { limit: 1, after: checkpoints.data[0]!.id });
  assert.deepEqual(secondPage.data.map((c) => c.step_number), [20]);

  // The result file: step_metrics.csv with the hosted columns, one row per step.
  assert.equal(job.result_files.length, 1);
  const file = await alpha.files.retrieve(job.result_files[0]!);
  assert.equal(file.purpose, 'fine-tune-results');
  assert.equal(file.filename, 'step_metrics.csv');
  const csv = (await (await alpha.files.content(file.id)).text()).trim().split('\n');
  assert.equal(csv[0], 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,valid_exact_match,valid_answer_similarity');
  assert.equal(csv.length, 31);
  const lastRow = csv[30]!.split(',');
  assert.equal(lastRow[0], '30');
  assert.equal(Number(lastRow[1]), last.train_loss);

  // The final model and a checkpoint are models of the project, and they answer.
  const listed = (await alpha.models.list()).data.map((m) => m.id);
  assert.ok(listed.includes(job.fine_tuned_model!));
  assert.ok(listed.includes(checkpoints.data[1]!.fine_tuned_model_checkpoint));
  const ask = async (model: string) => {
    const answer = await alpha.chat.completions.create({ model, messages: [{ role: 'user', content: QUESTION }], temperature: 0, max_tokens: 16 });
    assert.equal(answer.model, model);
    return answer.choices[0]!.message.content;
  };
  // The random-weight base model knows nothing; the tuned one learned its answer.
  assert.notEqual(await ask('localtune-default'), ANSWER);
  assert.equal(await ask(job.fine_tuned_model!), ANSWER);
  assert.ok((await ask(checkpoints.data[1]!.fine_tuned_model_checkpoint))!.length > 0);

  // Listing: newest first, filtered by metadata.
  assert.deepEqual((await alpha.fineTuning.jobs.list({ metadata: { team: 'geo' } })).data.map((j) => j.id), [job.id]);
  assert.deepEqual((await alpha.fineTuning.jobs.list({ metadata: { team: 'other' } })).data, []);

  // The finished job's resume point (adapter + optimizer moments) is removed once its worker has exited.
  const resumeDir = join(dataDir, 'jobs', job.id, 'resume');
  await waitFor(`${resumeDir} to be removed`, () => !existsSync(resumeDir));

  // Training continues from an ft: model's adapter.
  const continued = await alpha.fineTuning.jobs.create({ model: job.fine_tuned_model!, training_file: training, hyperparameters: { n_epochs: 1, batch_size: 5 } });
  const continuedDone = await finished(alpha, continued.id);
  assert.equal(continuedDone.status, 'succeeded', JSON.stringify(continuedDone.error));
  assert.equal(continuedDone.model, job.fine_tuned_model);
  // `metadata=` (the SDK's null) lists the jobs without metadata.
  assert.deepEqual((await alpha.fineTuning.jobs.list({ metadata: null })).data.map((j) => j.id), [continued.id]);
  assert.match(continuedDone.fine_tuned_model!, /^ft:localtune-default:alpha::[A-Za-z0-9]{8}$/);
});

test('invalid training data fails the job with an error that names the lines', async () => {
  const lines = TRAINING.split('\n');
  lines[2] = '{"messages": [{"role": "user", "content": "no answer"}]}';
  lines[6] = '{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}';
  const training = await upload(alpha, lines.join('\n'));
  const job = await finished(alpha, (await alpha.fineTuning.jobs.create({ model: 'localtune-default', training_file: training })).id);
  assert.equal(job.status, 'failed');
  assert.equal(job.error!.code, 'invalid_training_file');
  assert.equal(job.error!.param, 'training_file');
  assert.match(job.error!.message!, /example_missing_assistant_message: .*line 3\b/);
  assert.match(job.error!.message!, /unrecognized_role: .*line 7\b/);
  assert.equal(job.fine_tuned_model, null);
  const events = await allEvents(alpha, job.id);
  assert.equal(events[0]!.level, 'error');

  const few = await upload(alpha, TRAINING.split('\n').slice(0, 3).join('\n'));
  const tooFew = await finished(alpha, (await alpha.fineTuning.jobs.create({ model: 'localtune-default', training_file: few })).id);
  assert.equal(tooFew.error!.code, 'invalid_n_examples');
});

test('requests the server refuses are 400s naming the field; another project sees 404', async () => {
  const training = await upload(alpha, TRAINING);
  const refused = async (body: Record<string, unknown>, param: string, code?: string) => {
    await assert.rejects(alpha.fineTuning.jobs.create({ model: 'localtune-default', training_file: training, ...body } as never), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.param, param);
      if (code) assert.equal(e.code, code);
      return true;
    });
  };
  await refused({ method: { type: 'reinforcement' } }, 'method.type', 'unsupported_method');
  await refused({ integrations: [{ type: 'wandb', wandb: { project: 'p' } }] }, 'integrations', 'unsupported_integration');
  await refused({ model: 'no-such-model' }, 'model', 'model_not_available');
  await refused({ training_file: 'file-nope' }, 'training_file');
  await refused({ suffix: 'x'.repeat(65) }, 'suffix');
  await refused({ hyperparameters: { n_epochs: 0 } }, 'hyperparameters.n_epochs');
  await refused({ hyperparameters: { n_epochs: 1 }, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2 } } } }, 'hyperparameters');
  await refused({ lora: { r: 0 } }, 'lora.r');
  await refused({ lora: { target_modules: ['attn'] } }, 'lora.target_modules[0]');

  // Another project's job (and file) does not exist for this key.
  // An alias names the built-in model; the `lora` extension shows the settings used, defaults filled in.
  const job = await alpha.fineTuning.jobs.create({ model: 'gpt-4o-mini-2024-07-18', training_file: training, hyperparameters: { n_epochs: 1, batch_size: 10 }, lora: { r: 4, target_modules: ['v_proj', 'q_proj'] } } as never);
  assert.equal(job.model, 'gpt-4o-mini-2024-07-18');
  assert.deepEqual((job as { lora?: unknown }).lora, { r: 4, alpha: 32, dropout: 0.05, target_modules: ['q_proj', 'v_proj'] });
  await assert.rejects(beta.fineTuning.jobs.retrieve(job.id), OpenAI.NotFoundError);
  await assert.rejects(beta.fineTuning.jobs.cancel(job.id), OpenAI.NotFoundError);
  await assert.rejects(beta.fineTuning.jobs.listEvents(job.id), OpenAI.NotFoundError);
  await assert.rejects(beta.fineTuning.jobs.checkpoints.list(job.id), OpenAI.NotFoundError);
  await assert.rejects(beta.fineTuning.jobs.create({ model: 'localtune-default', training_file: training }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'training_file');
  assert.deepEqual((await beta.fineTuning.jobs.list()).data, []);
  assert.equal((await finished(alpha, job.id)).status, 'succeeded');
});

test('pause stops training, resume continues it, cancel ends it; refused state changes are 400', async () => {
  const training = await upload(alpha, TRAINING);
  const job = await alpha.fineTuning.jobs.create({ model: 'localtune-default', training_file: training, hyperparameters: { n_epochs: 50, batch_size: 1 } });
  await waitUntil(alpha, job.id, async (j) => j.status === 'running' && (await metricsSteps(alpha, job.id)).length >= 2, 'running with steps');

  const paused = await alpha.fineTuning.jobs.pause(job.id);
  assert.equal(paused.status, 'paused');
  // The worker stops within a step and says where.
  await waitUntil(alpha, job.id, async () => (await allEvents(alpha, job.id)).some((e) => e.message.startsWith('Training stopped at step')), 'stopped');
  const stepsWhenPaused = await metricsSteps(alpha, job.id);
  await assert.rejects(alpha.fineTuning.jobs.pause(job.id), (e: unknown) => e instanceof OpenAI.BadRequestError && /its status is paused/.test(e.message));

  const resumed = await alpha.fineTuning.jobs.resume(job.id);
  assert.equal(resumed.status, 'queued');
  await waitUntil(alpha, job.id, async (j) => j.status === 'running' && (await metricsSteps(alpha, job.id)).length > stepsWhenPaused.length, 'training again');
  const steps = await metricsSteps(alpha, job.id);
  assert.deepEqual(steps.slice(-stepsWhenPaused.length), stepsWhenPaused, 'resumed after the paused step, no step repeated');
  assert.equal(new Set(steps).size, steps.length);

  const cancelled = await alpha.fineTuning.jobs.cancel(job.id);
  assert.equal(cancelled.status, 'cancelled');
  for (const change of [() => alpha.fineTuning.jobs.cancel(job.id), () => alpha.fineTuning.jobs.pause(job.id), () => alpha.fineTuning.jobs.resume(job.id)]) {
    await assert.rejects(change(), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === 'invalid_job_status' && /its status is cancelled/.test(e.message));
  }
  const final = await alpha.fineTuning.jobs.retrieve(job.id);
  assert.equal(final.status, 'cancelled');
  assert.equal(final.fine_tuned_model, null);
});

test('a server killed with SIGKILL mid-training resumes the job at restart; it ends as an uninterrupted run does', async () => {
  const training = await upload(alpha, TRAINING);
  const body = { model: 'localtune-default', training_file: training, seed: 11, hyperparameters: { n_epochs: 4, batch_size: 1 } };
  const job = await alpha.fineTuning.jobs.create(body);
  await waitUntil(alpha, job.id, async () => (await metricsSteps(alpha, job.id)).length >= 15, 'past step 15');
  // As if a server had pruned a finished job's checkpoint from the database and died before removing its folder.
  const orphan = join(dataDir, 'jobs', firstJob, 'checkpoints', 'step-999');
  mkdirSync(orphan, { recursive: true });
  writeFileSync(join(orphan, 'adapter_model.safetensors'), 'x');
  await server.kill('SIGKILL');
  await server.restart();
  assert.ok(!existsSync(orphan), 'the unused adapter folder is removed at start');
  assert.ok(existsSync(join(dataDir, 'jobs', firstJob, 'final')), 'the folder a model is served from stays');
  const done = await finished(alpha, job.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
  const events = await allEvents(alpha, job.id);
  assert.ok(events.some((e) => e.message === 'Resuming the job after a server restart'));
  const steps = (await metricsSteps(alpha, job.id)).sort((a, b) => a - b);
  assert.deepEqual(steps, Array.from({ length: 40 }, (_, i) => i + 1), 'every step once');
  // Four epochs, three checkpoints kept: the oldest one's model is gone.
  const checkpoints = (await alpha.fineTuning.jobs.checkpoints.list(job.id)).data;
  assert.deepEqual(checkpoints.map((c) => c.step_number), [40, 30, 20]);
  const firstCheckpoint = events.map((e) => /^Checkpoint created at step 10 with Snapshot ID: (\S+)$/.exec(e.message)?.[1]).find(Boolean)!;
  assert.match(firstCheckpoint, /:ckpt-step-10$/);
  await assert.rejects(alpha.models.retrieve(firstCheckpoint), OpenAI.NotFoundError);
  assert.ok((await alpha.models.list()).data.some((m) => m.id === checkpoints[1]!.fine_tuned_model_checkpoint));

  const reference = await finished(alpha, (await alpha.fineTuning.jobs.create(body)).id);
  const lastLoss = async (id: string) => (await alpha.fineTuning.jobs.listEvents(id, { limit: 100 })).data.find((e) => e.type === 'metrics')!.data as { step: number; train_loss: number };
  const [a, b] = [await lastLoss(done.id), await lastLoss(reference.id)];
  assert.equal(a.step, 40);
  assert.ok(Math.abs(a.train_loss - b.train_loss) <= 1e-6 * Math.max(1, Math.abs(b.train_loss)), `${a.train_loss} vs ${b.train_loss}`);
});

test('a server stopped with SIGTERM mid-training saves where each job is; at restart the job continues from that step', async () => {
  // Resume points only hourly: the step the job continues from can only come from the save at shutdown.
  const other = await startTestServer({ env: { LOCALTUNE_RESUME_POINT_SECONDS: '3600', LOCALTUNE_TRAIN_THREADS: '1' } });
  try {
    const client = other.client();
    const job = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: await upload(client, TRAINING), hyperparameters: { n_epochs: 2, batch_size: 1 } });
    await waitFor('4 training steps', async () => (await metricsSteps(client, job.id)).length >= 4, { intervalMs: 100, context: () => other.output().slice(-4000) });
    await other.kill('SIGTERM');
    await other.restart();
    const done = await waitForJob(client, job.id, { context: () => other.output().slice(-4000) });
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    const messages = (await allEvents(client, job.id)).map((e) => e.message);
    const stoppedAt = Number(messages.map((m) => /^The server is shutting down: training stopped at step (\d+) and continues from there at the next start$/.exec(m)?.[1]).find(Boolean));
    assert.ok(stoppedAt >= 4, messages.join('\n'));
    assert.ok(messages.includes(`Resumed training at step ${stoppedAt}/20 on cpu`), messages.join('\n'));
    assert.deepEqual((await metricsSteps(client, job.id)).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1));
  } finally {
    await other.stop();
  }
});

test('a job caught validating by a SIGKILL validates again at restart and runs', async () => {
  const training = await upload(alpha, TRAINING);
  const job = await alpha.fineTuning.jobs.create({ model: 'localtune-default', training_file: training, hyperparameters: { n_epochs: 1, batch_size: 10 } });
  // Frozen as soon as it answered: it cannot take its validation child's verdict, so the job stays validating as a crash leaves it.
  server.suspend();
  await server.kill('SIGKILL');
  await server.restart();
  const done = await finished(alpha, job.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
  const messages = (await allEvents(alpha, job.id)).map((e) => e.message);
  assert.ok(messages.includes('Validating the files again after a server restart'));
  assert.equal(messages.filter((m) => m === 'Files validated, moving job to queued state').length, 1);
});

test('with LOCALTUNE_MAX_CONCURRENT_JOBS=2, three jobs run at most two at a time and all finish', async () => {
  const two = await startTestServer({ env: { LOCALTUNE_MAX_CONCURRENT_JOBS: '2' } });
  try {
    const client = two.client();
    const training = await upload(client, TRAINING);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: training, hyperparameters: { n_epochs: 2, batch_size: 2 } })).id);
    let mostRunning = 0;
    const jobs = await waitFor('the three jobs to finish', async () => {
      const polled = await Promise.all(ids.map((id) => client.fineTuning.jobs.retrieve(id)));
      mostRunning = Math.max(mostRunning, polled.filter((j) => j.status === 'running').length);
      return polled.every((j) => FINISHED_STATUSES.has(j.status)) && polled;
    }, { intervalMs: 100, context: () => two.output().slice(-4000) });
    assert.deepEqual(jobs.map((j) => j.status), ['succeeded', 'succeeded', 'succeeded']);
    assert.ok(mostRunning <= 2, `${mostRunning} jobs ran at once`);
  } finally {
    await two.stop();
  }
});
