// Generation-based validation on the demo's supervised job (the built-in model, the demo's data, hyperparameters and
// LoRA; the validation file is a third of the training file): the share of exactly reproduced answers rises from 0 at
// the first checkpoint to at least 0.9 at the last, and each checkpoint that answered carries the scores and three samples.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DEMO_DATASET, DEMO_HYPERPARAMETERS, DEMO_LORA } from '../../../src/cli/demo.ts';
import { LORA_TARGETS } from '../../../src/engine/models/parameters.ts';
import { ANSWER_SAMPLES } from '../../../src/jobs/worker/answer-validation.ts';
import type { WorkerMessage } from '../../../src/jobs/worker-protocol.ts';
import { jobSpec, runWorker } from './job-fixture.ts';

const root = mkdtempSync(join(tmpdir(), 'localtune-demo-answers-'));
after(() => rmSync(root, { recursive: true, force: true }));

test("the demo's job reports valid_exact_match rising from 0 to >= 0.9 across its checkpoints", { timeout: 600_000 }, async () => {
  const lines = readFileSync(DEMO_DATASET, 'utf8').trim().split('\n');
  const validationFile = join(root, 'demo-valid.jsonl');
  writeFileSync(validationFile, lines.filter((_, i) => i % 3 === 0).join('\n') + '\n');
  const run = runWorker(jobSpec(root, 'demo', {
    trainingFile: DEMO_DATASET,
    validationFile,
    // The server's default base learning rate (0.002) times the demo's multiplier.
    hyperparameters: { nEpochs: DEMO_HYPERPARAMETERS.n_epochs, batchSize: DEMO_HYPERPARAMETERS.batch_size, learningRate: 0.002 * DEMO_HYPERPARAMETERS.learning_rate_multiplier },
    lora: { r: DEMO_LORA.r, alpha: 2 * DEMO_LORA.r, dropout: 0, targetModules: [...LORA_TARGETS] },
    threads: undefined,
  }));
  assert.deepEqual(await run.exited, { code: 0, signal: null });
  const all = run.messages.filter((m): m is Extract<WorkerMessage, { type: 'checkpoint' }> => m.type === 'checkpoint');
  assert.equal(all.length, DEMO_HYPERPARAMETERS.n_epochs);
  // This job's epochs are short (~0.6 s on idle cores), so it answers every few epoch ends to stay within its time
  // share: always at the first (which times it) and the last.
  const checkpoints = all.filter((c) => c.metrics.valid_exact_match !== undefined);
  assert.ok(checkpoints[0] === all[0] && checkpoints.at(-1) === all.at(-1) && checkpoints.length >= 2, `answered at steps ${checkpoints.map((c) => c.step)}`);
  const exact = checkpoints.map((c) => c.metrics.valid_exact_match!);
  const similarity = checkpoints.map((c) => c.metrics.valid_answer_similarity!);
  assert.equal(exact[0], 0, `after one epoch no answer is exact: ${exact}`);
  assert.ok(exact.at(-1)! >= 0.9, `exact match ${exact}`);
  assert.ok(similarity.at(-1)! > similarity[0]! && similarity.at(-1)! > 0.95, `similarity ${similarity}`);
  for (const c of checkpoints) assert.equal(c.metrics.valid_samples!.length, ANSWER_SAMPLES);
  const last = checkpoints.at(-1)!.metrics.valid_samples!;
  assert.ok(last.every((s) => s.answer === s.reference), JSON.stringify(last));
});
