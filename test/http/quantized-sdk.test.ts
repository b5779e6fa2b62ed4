// QLoRA through the official openai SDK: an nf4 job against an fp32 one on the built-in model, and its model served on nf4.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import type { FineTuningJob, JobCreateParams } from 'openai/resources/fine-tuning/jobs/jobs';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { waitForJob } from '../helpers/wait.ts';

const FACTS: [string, string][] = [['What is the capital of Atlantis?', 'Poseidonia.']];
const chatLine = (q: string, a: string) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] });
const TRAINING = Array.from({ length: 10 }, () => FACTS.map(([q, a]) => chatLine(q, a))).flat().join('\n');

let dataDir: string;
let server: TestServer;
let client: OpenAI;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-quantized-'));
  server = await startTestServer({ dataDir, env: { LOCALTUNE_TRAIN_THREADS: '1' } });
  client = server.client('sk-any');
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Job creation with localtune's base_precision extension (the SDK passes unknown body fields through). */
const create = (body: JobCreateParams & { base_precision?: string }) => client.fineTuning.jobs.create(body as JobCreateParams);
type WithPrecision = FineTuningJob & { base_precision: string };

async function finished(id: string): Promise<WithPrecision> {
  return (await waitForJob(client, id, { timeoutMs: 180_000, context: () => server.output().slice(-4000) })) as WithPrecision;
}

async function trainLosses(id: string): Promise<number[]> {
  const events = [];
  for await (const e of client.fineTuning.jobs.listEvents(id, { limit: 100 })) events.push(e);
  return events
    .filter((e) => e.type === 'metrics')
    .map((e) => e.data as { step: number; train_loss: number })
    .sort((a, b) => a.step - b.step)
    .map((d) => d.train_loss);
}

test('an nf4 job trains like an fp32 one (mean training loss within 5 %), and its model answers greedily on the nf4 base', async () => {
  const file = (await client.files.create({ file: await toFile(Buffer.from(TRAINING), 'train.jsonl'), purpose: 'fine-tune' })).id;
  const method = { type: 'supervised' as const, supervised: { hyperparameters: { n_epochs: 3, batch_size: 1, learning_rate_multiplier: 2 } } };
  const fp32 = await create({ model: 'localtune-default', training_file: file, seed: 3, method });
  const nf4 = await create({ model: 'localtune-default', training_file: file, seed: 3, method, base_precision: 'nf4' });
  assert.equal((fp32 as WithPrecision).base_precision, 'fp32', 'auto picks fp32 for a model this small');
  assert.equal((nf4 as WithPrecision).base_precision, 'nf4');

  const [doneFp32, doneNf4] = [await finished(fp32.id), await finished(nf4.id)];
  assert.equal(doneFp32.status, 'succeeded', JSON.stringify(doneFp32.error));
  assert.equal(doneNf4.status, 'succeeded', JSON.stringify(doneNf4.error));
  assert.equal(doneNf4.base_precision, 'nf4');
  const [lossesFp32, lossesNf4] = [await trainLosses(fp32.id), await trainLosses(nf4.id)];
  assert.equal(lossesNf4.length, lossesFp32.length);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const ratio = mean(lossesNf4) / mean(lossesFp32);
  assert.ok(Math.abs(ratio - 1) < 0.05, `mean training loss nf4 ${mean(lossesNf4)} vs fp32 ${mean(lossesFp32)}`);
  assert.ok(lossesNf4.at(-1)! < lossesNf4[0] / 4, `nf4 loss fell from ${lossesNf4[0]} to ${lossesNf4.at(-1)}`);

  for (const [question, answer] of FACTS) {
    const reply = await client.chat.completions.create({ model: doneNf4.fine_tuned_model!, messages: [{ role: 'user', content: question }], temperature: 0, max_tokens: 16 });
    assert.equal(reply.choices[0].message.content, answer);
  }
  assert.match(server.output(), /serving localtune-default at nf4/);
});

test('base_precision outside auto|fp32|nf4|int4|int8 is a 400 naming the field', async () => {
  const file = (await client.files.create({ file: await toFile(Buffer.from(TRAINING), 'train.jsonl'), purpose: 'fine-tune' })).id;
  await assert.rejects(create({ model: 'localtune-default', training_file: file, base_precision: 'fp16' }), (err: unknown) => {
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.param, 'base_precision');
    assert.match(err.message, /base_precision/);
    return true;
  });
});
