// The training worker's DPO method: a DPO job continuing from a supervised adapter reports reward metrics, checkpoints and a
// final adapter; killed mid-run and started again it reproduces the uninterrupted run (reference log-probs and dropout included).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadAdapter } from '../../../src/engine/lora/peft.ts';
import { readModelDir } from '../../../src/engine/models/model-dir.ts';
import type { TrainingSpec, WorkerMessage } from '../../../src/jobs/worker-protocol.ts';
import { jobSpec, runWorker } from './job-fixture.ts';

const root = mkdtempSync(join(tmpdir(), 'localtune-dpo-worker-'));
after(() => rmSync(root, { recursive: true, force: true }));

type Of<T extends WorkerMessage['type']> = Extract<WorkerMessage, { type: T }>;
const ofType = <T extends WorkerMessage['type']>(messages: WorkerMessage[], type: T) => messages.filter((m): m is Of<T> => m.type === type);
const stepMetrics = (messages: WorkerMessage[]) => ofType(messages, 'step').map((m) => m.metrics);

/** Preferred: a short, friendly answer naming the thing; non-preferred: a curt refusal. */
const pairLine = (thing: string) =>
  JSON.stringify({
    input: { messages: [{ role: 'user', content: `Tell me about ${thing}.` }] },
    preferred_output: [{ role: 'assistant', content: `Gladly! ${thing} are wonderful.` }],
    non_preferred_output: [{ role: 'assistant', content: 'No.' }],
  });

let startAdapterDir: string;
function dpoSpec(name: string): TrainingSpec {
  const trainingFile = join(root, 'pairs.jsonl');
  const validationFile = join(root, 'valid-pairs.jsonl');
  writeFileSync(trainingFile, ['apples', 'rivers', 'clocks', 'tigers', 'violins'].map(pairLine).join('\n') + '\n');
  writeFileSync(validationFile, ['comets', 'owls'].map(pairLine).join('\n') + '\n');
  return jobSpec(root, name, { method: 'dpo', startAdapterDir, trainingFile, validationFile, hyperparameters: { nEpochs: 2, batchSize: 2, learningRate: 0.002, beta: 0.1 } });
}

let reference: WorkerMessage[];
before(async () => {
  const sft = runWorker(jobSpec(root, 'sft', { hyperparameters: { nEpochs: 1, batchSize: 2, learningRate: 0.004 } }));
  assert.deepEqual(await sft.exited, { code: 0, signal: null });
  startAdapterDir = ofType(sft.messages, 'succeeded')[0]!.dir;
  const run = runWorker(dpoSpec('dpo'));
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  reference = run.messages;
});

test('a DPO job from an ft: adapter succeeds with reward metrics per step and validation, checkpoints and the final adapter', () => {
  assert.deepEqual(
    // 5 pairs, batch 2, 2 epochs; the resume points written between (the supervised worker test checks those) left out.
    reference.map((m) => m.type).filter((type) => type !== 'resume-point'),
    ['started', 'step', 'step', 'step', 'checkpoint', 'step', 'step', 'step', 'checkpoint', 'succeeded'],
  );
  const steps = stepMetrics(reference);
  // Step 1 starts at the reference model: −log σ(0) = ln 2, up to LoRA dropout (p = 0.1), whose noise in the margin
  // raises the mean loss (measured 0.67–0.77 over seeds); a wrong reference lands far from it.
  assert.ok(Math.abs(steps[0]!.train_loss - Math.LN2) < 0.15, `first loss ${steps[0]!.train_loss}`);
  for (const m of steps) {
    for (const key of ['train_reward_accuracy', 'valid_reward_accuracy'] as const) assert.ok(m[key]! >= 0 && m[key]! <= 1, `step ${m.step} ${key}: ${m[key]}`);
    assert.ok(Number.isFinite(m.train_reward_margin) && Number.isFinite(m.valid_reward_margin) && Number.isFinite(m.valid_loss), JSON.stringify(m));
  }
  // Epoch ends answer the validation prompts and say whether each answer is nearer the preferred output.
  assert.deepEqual(steps.filter((m) => m.valid_closer_to_preferred !== undefined).map((m) => m.step), [3, 6]);
  assert.deepEqual(steps.at(-1)!.valid_samples!.map((s) => s.reference).sort(), ['Gladly! comets are wonderful.', 'Gladly! owls are wonderful.']);
  const last = steps.at(-1)!;
  assert.ok(last.train_loss < 0.3 && last.train_reward_accuracy === 1 && last.train_reward_margin! > 1, JSON.stringify(last));
  // Held-out pairs of the same kind: the tuned model prefers the preferred output over the reference's preference.
  assert.ok(last.full_valid_loss! < 0.3 && last.valid_reward_accuracy === 1 && last.valid_reward_margin! > 1, JSON.stringify(last));
  const [done] = ofType(reference, 'succeeded');
  const config = readModelDir(jobSpec(root, 'x').modelDir).config;
  // The adapter keeps the start adapter's rank and targets; it moved away from it.
  const start = loadAdapter(startAdapterDir, config);
  const final = loadAdapter(done.dir, config);
  assert.deepEqual(final.config, start.config);
  assert.ok([...final.tensors].some(([name, t]) => t.data.some((x, i) => x !== start.tensors.get(name)!.data[i])));
});

test('killed mid-run and started again, a DPO job reproduces every step and the final adapter', async () => {
  const spec = dpoSpec('dpo-killed');
  const first = runWorker(spec);
  await first.waitFor((m) => m.type === 'step' && m.metrics.step === 4);
  first.handle.kill('SIGKILL');
  assert.equal((await first.exited).signal, 'SIGKILL');
  const second = runWorker(spec);
  assert.deepEqual(await second.exited, { code: 0, signal: null });
  const [started] = ofType(second.messages, 'started');
  assert.ok(started.resumedFromStep >= 3, `resumed from step ${started.resumedFromStep}`);
  for (const m of [...stepMetrics(first.messages), ...stepMetrics(second.messages)]) {
    const ref = stepMetrics(reference).find((r) => r.step === m.step)!;
    for (const key of ['train_loss', 'train_reward_margin', 'valid_reward_margin'] as const) assert.ok(Math.abs(m[key]! - ref[key]!) <= 1e-5, `step ${m.step} ${key}: ${m[key]} vs ${ref[key]}`);
  }
  const config = readModelDir(spec.modelDir).config;
  const a = loadAdapter(ofType(reference, 'succeeded')[0]!.dir, config).tensors;
  const b = loadAdapter(ofType(second.messages, 'succeeded')[0]!.dir, config).tensors;
  for (const [name, t] of a) assert.deepEqual(b.get(name)!.data, t.data, name);
});

test('a DPO job with beta outside (0, 2] fails naming the field', async () => {
  const spec = dpoSpec('bad-beta');
  const run = runWorker({ ...spec, hyperparameters: { ...spec.hyperparameters, beta: 3 } });
  assert.equal((await run.exited).code, 1);
  const [failed] = ofType(run.messages, 'failed');
  assert.deepEqual([failed.code, failed.param], ['invalid_hyperparameters', 'hyperparameters.beta']);
  assert.match(failed.message, /beta must be a number in \(0, 2\], got 3/);
});
