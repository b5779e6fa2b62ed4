// The training worker as the scheduler drives it: a job runs to `succeeded` with checkpoints; SIGKILL, pause and resume
// reproduce the uninterrupted run step for step; cancel stops within a step; bad inputs fail with a clear message.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadAdapter } from '../../../src/engine/lora/peft.ts';
import { readModelDir } from '../../../src/engine/models/model-dir.ts';
import type { StepMetrics, TrainingSpec, WorkerMessage } from '../../../src/jobs/worker-protocol.ts';
import { readResumePoint, resumePointPath, writeResumePoint } from '../../../src/jobs/worker/resume-point.ts';
import { workerPriority } from '../../../src/jobs/worker/start-training-worker.ts';
import { runTrainingJob } from '../../../src/jobs/worker/training-job.ts';
import { jobSpec, runWorker } from './job-fixture.ts';

const root = mkdtempSync(join(tmpdir(), 'localtune-worker-'));
after(() => rmSync(root, { recursive: true, force: true }));

type Of<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;
const ofType = <T extends WorkerMessage['type']>(messages: WorkerMessage[], type: T) => messages.filter((m): m is Of<T> => m.type === type);
const stepMessages = (messages: WorkerMessage[]) => ofType(messages, 'step').map((m) => m.metrics);

function assertSameAdapter(dirA: string, dirB: string): void {
  const config = readModelDir(jobSpec(root, 'x').modelDir).config;
  const a = loadAdapter(dirA, config).tensors;
  const b = loadAdapter(dirB, config).tensors;
  assert.deepEqual([...b.keys()], [...a.keys()]);
  for (const [name, t] of a) assert.deepEqual(b.get(name)!.data, t.data, name);
}

/** Every step's metrics match the reference step of the same number (losses within 1e-5). */
function assertStepsMatch(got: StepMetrics[], reference: StepMetrics[]): void {
  for (const m of got) {
    const ref = reference.find((r) => r.step === m.step);
    assert.ok(ref, `step ${m.step} is not in the reference run`);
    for (const key of ['train_loss', 'valid_loss', 'full_valid_loss', 'valid_exact_match', 'valid_answer_similarity'] as const) {
      assert.equal(m[key] === undefined, ref[key] === undefined, `step ${m.step}: ${key} present in one run only`);
      if (m[key] !== undefined) assert.ok(Math.abs(m[key]! - ref[key]!) <= 1e-5, `step ${m.step} ${key}: ${m[key]} vs ${ref[key]}`);
    }
  }
}

let reference: WorkerMessage[];
before(async () => {
  const run = runWorker(jobSpec(root, 'reference'));
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  reference = run.messages;
});

test('a job runs to succeeded: started, a step per optimizer step, a loadable checkpoint per epoch, the final adapter', () => {
  const spec = jobSpec(root, 'reference');
  const [started] = ofType(reference, 'started');
  assert.deepEqual(started, { type: 'started', device: 'cpu', totalSteps: 8, stepsPerEpoch: 4, resumedFromStep: 0 }); // 7 examples, batch 2, 2 epochs
  // resumePointSeconds 0: a resume point after every step (after its checkpoint at an epoch end), each said once written.
  assert.deepEqual(
    reference.map((m) => (m.type === 'resume-point' ? `resume-point ${m.step}` : m.type)),
    ['started', 'step', 'resume-point 1', 'step', 'resume-point 2', 'step', 'resume-point 3', 'step', 'checkpoint', 'resume-point 4',
      'step', 'resume-point 5', 'step', 'resume-point 6', 'step', 'resume-point 7', 'step', 'checkpoint', 'resume-point 8', 'succeeded'],
  );
  const steps = stepMessages(reference);
  assert.deepEqual(
    steps.map((m) => m.step),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  for (const m of steps) {
    assert.ok(Number.isFinite(m.train_loss) && m.train_mean_token_accuracy >= 0 && m.train_mean_token_accuracy <= 1, JSON.stringify(m));
    assert.ok(Number.isFinite(m.valid_loss) && Number.isFinite(m.valid_mean_token_accuracy), `step ${m.step} has validation metrics`);
  }
  assert.ok(steps.at(-1)!.train_loss < steps[0]!.train_loss * 0.7, `loss ${steps[0]!.train_loss} → ${steps.at(-1)!.train_loss}`);
  assert.ok(steps.at(-1)!.full_valid_loss! < steps[3]!.full_valid_loss!, 'validation loss falls between the epochs');
  assert.deepEqual(
    steps.filter((m) => m.full_valid_loss !== undefined).map((m) => m.step),
    [4, 8],
  );
  // Epoch ends also answer the validation prompts greedily (both: fewer than ANSWER_SAMPLES) and score the answers.
  const answered = steps.filter((m) => m.valid_exact_match !== undefined);
  assert.deepEqual(answered.map((m) => m.step), [4, 8]);
  for (const m of answered) {
    assert.ok(m.valid_exact_match! >= 0 && m.valid_exact_match! <= 1 && m.valid_answer_similarity! >= 0 && m.valid_answer_similarity! <= 1, JSON.stringify(m));
    assert.equal(m.valid_closer_to_preferred, undefined, 'a supervised job has no non-preferred outputs');
    assert.deepEqual(m.valid_samples!.map((s) => s.reference).sort(), ['Titan.', 'William Shakespeare.']);
    for (const s of m.valid_samples!) assert.match(s.prompt, /Answer briefly\.[\s\S]*\?/);
  }
  const tokens = ofType(reference, 'step').map((m) => m.trainedTokens);
  assert.ok(tokens.every((t, i) => t > (tokens[i - 1] ?? 0)), `trainedTokens grow: ${tokens}`);

  const checkpoints = ofType(reference, 'checkpoint');
  assert.deepEqual(
    checkpoints.map((c) => [c.step, c.epoch, c.dir]),
    [
      [4, 1, join(spec.jobDir, 'checkpoints', 'step-4')],
      [8, 2, join(spec.jobDir, 'checkpoints', 'step-8')],
    ],
  );
  assert.deepEqual(checkpoints[0]!.metrics, steps[3]);
  const config = readModelDir(spec.modelDir).config;
  const first = loadAdapter(checkpoints[0]!.dir, config);
  assert.deepEqual(first.config, spec.lora);

  const [done] = ofType(reference, 'succeeded');
  assert.equal(done.dir, join(spec.jobDir, 'final'));
  assert.equal(done.trainedTokens, tokens.at(-1));
  assert.deepEqual(done.metrics, steps.at(-1));
  assertSameAdapter(done.dir, checkpoints[1]!.dir);
  // Trained: B started at zero and every LoRA B moved; the first epoch's checkpoint differs from the final adapter.
  const final = loadAdapter(done.dir, config).tensors;
  for (const [name, t] of final) if (name.includes('lora_B')) assert.ok(t.data.some((x) => x !== 0), `${name} is still zero`);
  assert.ok([...final].some(([name, t]) => t.data.some((x, i) => x !== first.tensors.get(name)!.data[i])));
});

test('killed with SIGKILL mid-run and started again, the job reproduces every step and the final adapter', async () => {
  const spec = jobSpec(root, 'killed');
  const first = runWorker(spec);
  await first.waitFor((m) => m.type === 'step' && m.metrics.step === 6);
  assert.equal(getPriority(first.handle.pid!), workerPriority(), 'the worker runs at a lower priority than the server');
  first.handle.kill('SIGKILL');
  assert.equal((await first.exited).signal, 'SIGKILL');
  assert.ok(existsSync(resumePointPath(spec.jobDir)));
  assert.equal(ofType(first.messages, 'succeeded').length, 0);
  const leftover = join(spec.jobDir, 'checkpoints', '.step-8.4242.0badf00d.tmp'); // as a kill mid-write leaves it
  mkdirSync(leftover, { recursive: true });

  const second = runWorker(spec);
  assert.deepEqual(await second.exited, { code: 0, signal: null });
  const [started] = ofType(second.messages, 'started');
  assert.ok(started.resumedFromStep >= 5 && started.resumedFromStep <= 8, `resumed from step ${started.resumedFromStep}`);
  const resumedSteps = stepMessages(second.messages);
  // The step the resume point holds comes again first (the server may have died before reading it), then the rest.
  assert.deepEqual(
    resumedSteps.map((m) => m.step),
    Array.from({ length: 9 - started.resumedFromStep }, (_, i) => started.resumedFromStep + i),
  );
  assert.deepEqual(resumedSteps[0], stepMessages(first.messages).find((m) => m.step === started.resumedFromStep));
  assertStepsMatch([...stepMessages(first.messages), ...resumedSteps], stepMessages(reference));
  assert.equal(ofType(second.messages, 'succeeded')[0]!.trainedTokens, ofType(reference, 'succeeded')[0]!.trainedTokens);
  assertSameAdapter(ofType(second.messages, 'succeeded')[0]!.dir, ofType(reference, 'succeeded')[0]!.dir);
  assert.ok(!existsSync(leftover), 'half-written leftovers are removed');
});

test('pause stops after the current step with a resume point; starting again finishes as the uninterrupted run', async () => {
  const spec = jobSpec(root, 'paused');
  const first = runWorker(spec);
  await first.waitFor((m) => m.type === 'step' && m.metrics.step === 2);
  first.handle.send({ type: 'pause' });
  assert.deepEqual(await first.exited, { code: 0, signal: null });
  const stopped = ofType(first.messages, 'stopped');
  assert.equal(stopped.length, 1);
  assert.equal(stopped[0]!.reason, 'pause');
  assert.ok(stopped[0]!.step >= 2 && stopped[0]!.step < 8, `paused at step ${stopped[0]!.step}`); // the pause arrives during step 2 or a little later
  assert.equal(stepMessages(first.messages).at(-1)!.step, stopped[0]!.step);

  const second = runWorker(spec);
  assert.deepEqual(await second.exited, { code: 0, signal: null });
  assert.equal(ofType(second.messages, 'started')[0]!.resumedFromStep, stopped[0]!.step);
  assertStepsMatch([...stepMessages(first.messages), ...stepMessages(second.messages)], stepMessages(reference));
  assert.deepEqual(stepMessages(second.messages)[0], stepMessages(first.messages).at(-1)); // repeated once after 'started'
  assert.equal(stepMessages(first.messages).length + stepMessages(second.messages).length, 9);
  assertSameAdapter(ofType(second.messages, 'succeeded')[0]!.dir, ofType(reference, 'succeeded')[0]!.dir);
});

test('SIGTERM or SIGINT to the worker (Ctrl-C reaches the whole process group) stops it after the step with a resume point', async () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const spec = jobSpec(root, `signalled-${signal}`, { resumePointSeconds: 3600 });
    const run = runWorker(spec);
    await run.waitFor((m) => m.type === 'step' && m.metrics.step === 1);
    run.handle.kill(signal);
    assert.deepEqual(await run.exited, { code: 0, signal: null });
    const stopped = ofType(run.messages, 'stopped');
    assert.deepEqual(stopped.map((m) => m.reason), ['shutdown']);
    assert.equal(stepMessages(run.messages).at(-1)!.step, stopped[0]!.step);
    assert.ok(existsSync(resumePointPath(spec.jobDir)));
  }
});

test('cancel over IPC stops the worker without a resume point or final adapter', async () => {
  const spec = jobSpec(root, 'cancelled', { resumePointSeconds: 3600 });
  const run = runWorker(spec);
  await run.waitFor((m) => m.type === 'step' && m.metrics.step === 1);
  run.handle.send({ type: 'cancel' });
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  const stopped = ofType(run.messages, 'stopped');
  assert.equal(stopped.length, 1);
  assert.equal(stopped[0]!.reason, 'cancel');
  assert.equal(run.messages.at(-1)!.type, 'stopped');
  assert.equal(stepMessages(run.messages).at(-1)!.step, stopped[0]!.step);
  assert.ok(!existsSync(join(spec.jobDir, 'final')));
  assert.ok(!existsSync(resumePointPath(spec.jobDir)));
});

test('a cancel sent right after the start is not missed while the engine loads', async () => {
  const spec = jobSpec(root, 'cancelled-at-once');
  const run = runWorker(spec);
  run.handle.send({ type: 'cancel' });
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  assert.deepEqual(
    run.messages.map((m) => m.type),
    ['started', 'stopped'],
  );
  assert.deepEqual(run.messages[1], { type: 'stopped', reason: 'cancel', step: 0 });
});

test('a command received during step k is honoured before step k + 1; pause and shutdown save a resume point', async () => {
  for (const command of ['cancel', 'pause', 'shutdown'] as const) {
    const spec = jobSpec(root, `in-process-${command}`, { resumePointSeconds: 3600 });
    const sent: WorkerMessage[] = [];
    let pending: typeof command | null = null;
    const outcome = await runTrainingJob(spec, {
      async send(m) {
        sent.push(m);
        if (m.type === 'step' && m.metrics.step === 3) pending = command; // arrives while step 3 reports
      },
      async flush() {
        sent.push({ type: 'flush' });
      },
      pendingCommand: () => pending,
      log: () => {},
    });
    assert.equal(outcome, 'stopped');
    assert.deepEqual(
      sent.map((m) => m.type),
      // The resume point is written only once the scheduler has recorded every step before it.
      command === 'cancel' ? ['started', 'step', 'step', 'step', 'stopped'] : ['started', 'step', 'step', 'step', 'flush', 'resume-point', 'stopped'],
    );
    assert.deepEqual(sent.at(-1), { type: 'stopped', reason: command, step: 3 });
    assert.equal(existsSync(resumePointPath(spec.jobDir)), command !== 'cancel');
  }
});

test('resumed at an epoch start, the worker repeats that step and its checkpoint (their messages may have gone unread)', async () => {
  const spec = jobSpec(root, 'epoch-end-pause', { resumePointSeconds: 3600 });
  const collect = async (pauseAfter: number | null) => {
    const sent: WorkerMessage[] = [];
    let pending: 'pause' | null = null;
    await runTrainingJob(spec, {
      async send(m) {
        sent.push(m);
        if (m.type === 'checkpoint' && m.step === pauseAfter) pending = 'pause';
      },
      flush: async () => {},
      pendingCommand: () => pending,
      log: () => {},
    });
    return sent;
  };
  const first = await collect(4);
  assert.deepEqual(first.at(-1), { type: 'stopped', reason: 'pause', step: 4 });
  const second = await collect(null);
  assert.deepEqual(
    second.map((m) => (m.type === 'step' ? `step ${m.metrics.step}` : m.type === 'checkpoint' ? `checkpoint ${m.step}` : m.type)),
    ['started', 'step 4', 'checkpoint 4', 'step 5', 'step 6', 'step 7', 'step 8', 'checkpoint 8', 'resume-point', 'succeeded'],
  );
  assert.deepEqual(second[2], first.find((m) => m.type === 'checkpoint'));
});

test('a job continues from an existing adapter (an ft: model), keeping the rank and targets of that adapter', async () => {
  const start = ofType(reference, 'succeeded')[0]!.dir;
  const spec = jobSpec(root, 'continued', { startAdapterDir: start, hyperparameters: { nEpochs: 1, batchSize: 2, learningRate: 0.004 }, lora: { r: 16, alpha: 32, dropout: 0, targetModules: ['q_proj'] } });
  const run = runWorker(spec);
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  const [done] = ofType(run.messages, 'succeeded');
  const steps = stepMessages(run.messages);
  assert.equal(steps.length, 4);
  assert.ok(steps[0]!.train_loss < stepMessages(reference)[0]!.train_loss * 0.8, `starts trained: ${steps[0]!.train_loss}`);
  const config = readModelDir(spec.modelDir).config;
  assert.deepEqual(loadAdapter(done.dir, config).config, { ...jobSpec(root, 'x').lora, dropout: 0 });
});

async function failure(spec: ReturnType<typeof jobSpec>): Promise<Of<'failed'>> {
  const run = runWorker(spec);
  assert.equal((await run.exited).code, 1);
  assert.deepEqual(
    run.messages.map((m) => m.type),
    ['failed'],
  );
  return run.messages[0] as Of<'failed'>;
}

test('bad inputs fail with a code, the field and a clear message', async () => {
  const tooLong = join(root, 'too-long.jsonl');
  const long = 'x'.repeat(2100); // the default model's context is 2048 tokens of one byte each
  writeFileSync(tooLong, JSON.stringify({ messages: [{ role: 'user', content: long }, { role: 'assistant', content: 'ok' }] }) + '\n');
  const f1 = await failure(jobSpec(root, 'too-long', { trainingFile: tooLong, validationFile: null }));
  assert.equal(f1.code, 'invalid_training_file');
  assert.equal(f1.param, 'training_file');
  assert.match(f1.message, /none of its 1 example\(s\) has an assistant token to train on within the model's 2048-token context/);

  const notAdapter = await failure(jobSpec(root, 'bad-adapter', { startAdapterDir: join(root, 'models') }));
  assert.equal(notAdapter.code, 'invalid_model');
  assert.match(notAdapter.message, /The adapter to continue from does not fit localtune-default: .*adapter_config\.json is missing/);

  const spec = jobSpec(root, 'broken-resume');
  mkdirSync(join(spec.jobDir, 'resume'), { recursive: true });
  writeFileSync(resumePointPath(spec.jobDir), 'not a safetensors file');
  const broken = await failure(spec);
  assert.equal(broken.code, 'server_error');
  assert.match(broken.message, /resume point cannot be read, so the job cannot continue: /);
});

/** Runs the job in this process, pausing once step `pauseAt` has reported; returns what it sent. */
async function runInProcess(spec: TrainingSpec, pauseAt: number | null): Promise<WorkerMessage[]> {
  const sent: WorkerMessage[] = [];
  let pending: 'pause' | null = null;
  await runTrainingJob(spec, {
    async send(m) {
      sent.push(m);
      if (m.type === 'step' && m.metrics.step === pauseAt) pending = 'pause';
    },
    flush: async () => {},
    pendingCommand: () => pending,
    log: () => {},
  });
  return sent;
}

test('a resume point continues on another node: other paths to the same files and base model', async () => {
  const here = jobSpec(root, 'moved', { resumePointSeconds: 3600 });
  const first = await runInProcess(here, 3);
  assert.deepEqual(first.at(-1), { type: 'stopped', reason: 'pause', step: 3 });
  // The other node: its own data dir (blob cache, job folder) and models dir; the resume point fetched into its job folder.
  const other = mkdtempSync(join(root, 'node-b-'));
  const copy = (path: string) => {
    const to = join(other, `cached-${basename(path)}`);
    copyFileSync(path, to);
    return to;
  };
  const there = jobSpec(other, 'moved', { resumePointSeconds: 3600, trainingFile: copy(here.trainingFile), validationFile: copy(here.validationFile!) });
  assert.notEqual(there.modelDir, here.modelDir);
  cpSync(join(here.jobDir, 'resume'), join(there.jobDir, 'resume'), { recursive: true });
  const second = await runInProcess(there, null);
  assert.equal(ofType(second, 'started')[0]!.resumedFromStep, 3);
  assertStepsMatch([...stepMessages(first), ...stepMessages(second)], stepMessages(reference));
  assertSameAdapter(ofType(second, 'succeeded')[0]!.dir, ofType(reference, 'succeeded')[0]!.dir);

  // Other bytes under the same name are other inputs: refused, not mixed.
  const changed = jobSpec(other, 'moved-changed', { resumePointSeconds: 3600, trainingFile: copy(here.trainingFile), validationFile: there.validationFile });
  appendFileSync(changed.trainingFile, readFileSync(changed.trainingFile, 'utf8'));
  cpSync(join(here.jobDir, 'resume'), join(changed.jobDir, 'resume'), { recursive: true });
  const refused = await runInProcess(changed, null);
  assert.deepEqual(refused.map((m) => m.type), ['failed']);
  assert.match((refused[0] as Of<'failed'>).message, /written for other training inputs or hyperparameters; refusing to mix them/);
});

test('a resume point written by the previous version (fingerprinted by paths and sizes) still resumes on its node', async () => {
  const spec = jobSpec(root, 'legacy', { resumePointSeconds: 3600 });
  const first = await runInProcess(spec, 2);
  // The fingerprint as the previous version computed it.
  const size = (path: string | null) => (path ? statSync(path).size : null);
  const legacy = createHash('sha256').update(JSON.stringify({
    method: spec.method, modelDir: spec.modelDir, startAdapterDir: spec.startAdapterDir,
    trainingFile: [spec.trainingFile, size(spec.trainingFile)], validationFile: [spec.validationFile, size(spec.validationFile)],
    hyperparameters: spec.hyperparameters, lora: spec.lora, seed: spec.seed,
  })).digest('hex');
  const point = readResumePoint(spec.jobDir)!;
  writeResumePoint(spec.jobDir, { ...point, fingerprint: legacy });
  const second = await runInProcess(spec, null);
  assert.equal(ofType(second, 'started')[0]!.resumedFromStep, 2);
  assertStepsMatch([...stepMessages(first), ...stepMessages(second)], stepMessages(reference));
});
