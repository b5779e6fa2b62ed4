// DPO through the official openai SDK: a supervised job on the built-in model, then a DPO job from its ft: model on
// preference pairs; on held-out pairs the tuned model's log-probability margin (preferred − non-preferred, from the
// engine's logits with the served adapters) is clearly larger than the start model's.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import type { FineTuningJob } from 'openai/resources/fine-tuning/jobs/jobs';
import { preferenceSequence } from '../../src/datasets/batches.ts';
import { createChatTokenizer, tokenizePreferenceExample, type TokenizedExample } from '../../src/datasets/tokenize-example.ts';
import { DEFAULT_MODEL_ID } from '../../src/engine/models/default-model.ts';
import { loadTokenizer } from '../../src/engine/models/tokenizer.ts';
import { DPO_LEARNING_RATE_SCALE } from '../../src/jobs/methods.ts';
import { loadAdapter } from '../../src/engine/lora/peft.ts';
import { readModelDir } from '../../src/engine/models/model-dir.ts';
import { computeLogits } from '../../src/engine/train/verify.ts';
import { openTestStore } from '../helpers/store.ts';
import { createKey, startTestServer, type TestServer } from '../helpers/server.ts';
import { waitForJob } from '../helpers/wait.ts';

const THINGS = ['apples', 'rivers', 'clocks', 'tigers', 'violins', 'comets', 'bread', 'stones', 'kites', 'maps', 'owls', 'candles'];
const HELD_OUT = ['bridges', 'shells', 'trains', 'forests', 'lamps', 'boats', 'drums', 'roses', 'moons', 'hats'];
const chatLine = (thing: string) => JSON.stringify({ messages: [{ role: 'user', content: `Name: ${thing}` }, { role: 'assistant', content: `This is ${thing}.` }] });
/** Preferred: a friendly answer naming the thing; non-preferred: a curt refusal. The held-out pairs follow the same rule. */
const pair = (thing: string) => ({
  input: { messages: [{ role: 'user', content: `Tell me about ${thing}.` }] },
  preferred_output: [{ role: 'assistant', content: `Gladly! ${thing} are wonderful.` }],
  non_preferred_output: [{ role: 'assistant', content: 'No.' }],
});
const jsonl = (lines: unknown[]) => lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n');
const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;

let dataDir: string;
let server: TestServer;
let client: OpenAI;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-dpo-'));
  const key = await createKey(dataDir, 'alpha');
  server = await startTestServer({ dataDir });
  client = server.client(key);
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function upload(text: string, name: string): Promise<string> {
  return (await client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'fine-tune' })).id;
}

const finished = (id: string): Promise<FineTuningJob> => waitForJob(client, id, { context: () => server.output().slice(-4000) });

/** Σ log p(token) over each sequence's weighted tokens, from the engine's logits with the model's stored adapter. */
async function sequenceLogps(model: string, sequences: TokenizedExample[]): Promise<number[]> {
  const store = await openTestStore(dataDir);
  const row = await store.models.get('alpha', model);
  const adapterDir = row && await store.dirs.fetch(row.adapter_dir);
  await store.close();
  assert.ok(row && adapterDir, `${model} is stored`);
  const modelDir = join(dataDir, 'models', DEFAULT_MODEL_ID);
  const { config, logits } = await computeLogits({
    modelDir,
    cacheDir: join(dataDir, 'cache-test', DEFAULT_MODEL_ID),
    tokens: sequences.map((s) => Array.from(s.ids)),
    adapter: ((a) => ({ lora: a.config, tensors: a.tensors }))(loadAdapter(adapterDir, readModelDir(modelDir).config)),
    device: 'cpu',
  });
  const V = config.vocabSize;
  return sequences.map((s, b) => {
    let sum = 0;
    for (let t = 0; t + 1 < s.ids.length; t++) {
      if (s.weights[t + 1] !== 1) continue;
      const row = logits[b]!.subarray(t * V, (t + 1) * V);
      const max = row.reduce((m, x) => Math.max(m, x), -Infinity);
      const logZ = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      sum += row[s.ids[t + 1]!]! - logZ;
    }
    return sum;
  });
}

test('supervised job, then a DPO job from its ft: model: succeeds, reports reward metrics, and widens the held-out margin', async (t) => {
  const chatFile = await upload(jsonl(THINGS.slice(0, 10).map(chatLine)), 'sft.jsonl');
  const sft = await client.fineTuning.jobs.create({
    model: DEFAULT_MODEL_ID,
    training_file: chatFile,
    seed: 3,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 2, batch_size: 2, learning_rate_multiplier: 1 } } },
  });
  const sftJob = await finished(sft.id);
  assert.equal(sftJob.status, 'succeeded', JSON.stringify(sftJob.error));
  const start = sftJob.fine_tuned_model!;

  const pairs = await upload(jsonl(THINGS.map(pair)), 'pairs.jsonl');
  // A supervised file given to a DPO job fails validation, saying so.
  const wrong = await finished((await client.fineTuning.jobs.create({ model: start, training_file: chatFile, method: { type: 'dpo' } })).id);
  assert.equal(wrong.status, 'failed');
  assert.equal(wrong.error!.code, 'invalid_training_file');
  assert.match(wrong.error!.message, /not_preference_pair: the line is a chat example, but a DPO job trains on preference pairs/);

  const created = await client.fineTuning.jobs.create({
    model: start,
    training_file: pairs,
    validation_file: await upload(jsonl(HELD_OUT.map(pair)), 'held-out.jsonl'),
    suffix: 'friendly',
    seed: 5,
    // The supervised base rate and no NLL term (DPO's defaults are gentler; dpo-defaults-sdk.test.ts tests them): the
    // margin widens within these few steps.
    method: { type: 'dpo', dpo: { hyperparameters: { beta: 0.1, n_epochs: 2, batch_size: 4, learning_rate_multiplier: 1 / DPO_LEARNING_RATE_SCALE, rpo_alpha: 0 } as never } },
  });
  const job = await finished(created.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.equal(job.method!.type, 'dpo');
  assert.deepEqual(job.method!.dpo!.hyperparameters, { beta: 0.1, n_epochs: 2, batch_size: 4, learning_rate_multiplier: 1 / DPO_LEARNING_RATE_SCALE, rpo_alpha: 0 });
  assert.match(job.fine_tuned_model!, /^ft:localtune-default:alpha:friendly:[A-Za-z0-9]{8}$/);

  // Metrics events carry the reward accuracy and margin; the result file has their columns.
  const metrics = [];
  for await (const e of client.fineTuning.jobs.listEvents(job.id)) if (e.type === 'metrics') metrics.push(e.data as Record<string, number>);
  metrics.sort((a, b) => a.step! - b.step!);
  assert.equal(metrics.length, 6); // 12 pairs, batch 4, 2 epochs
  assert.ok(Math.abs(metrics[0]!.train_loss! - Math.LN2) < 0.05, `step 1 starts at the reference: loss ${metrics[0]!.train_loss}`);
  const last = metrics.at(-1)!;
  assert.ok(last.train_reward_accuracy === 1 && last.train_reward_margin! > 0.5 && last.valid_reward_accuracy === 1, JSON.stringify(last));
  const csv = await (await client.files.content(job.result_files[0]!)).text();
  assert.equal(
    csv.split('\n')[0],
    'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,train_reward_accuracy,train_reward_margin,valid_reward_accuracy,valid_reward_margin,' +
      'train_preferred_logp_shift,valid_exact_match,valid_answer_similarity,valid_closer_to_preferred',
  );
  assert.equal(csv.trim().split('\n').length, 7);

  // Held-out pairs: the margin log p(preferred) − log p(non-preferred), start model vs tuned model.
  const chat = createChatTokenizer(loadTokenizer(join(dataDir, 'models', DEFAULT_MODEL_ID)));
  const sequences = HELD_OUT.map((t) => tokenizePreferenceExample(chat, pair(t))).flatMap((p) => [preferenceSequence(p.promptIds, p.chosen), preferenceSequence(p.promptIds, p.rejected)]);
  const margins = async (model: string) => {
    const logps = await sequenceLogps(model, sequences);
    return HELD_OUT.map((_, p) => logps[2 * p]! - logps[2 * p + 1]!);
  };
  const before = await margins(start);
  const tuned = await margins(job.fine_tuned_model!);
  const gains = tuned.map((m, p) => m - before[p]!);
  t.diagnostic(`held-out margin (nats, mean of ${HELD_OUT.length}): start ${mean(before).toFixed(2)}, tuned ${mean(tuned).toFixed(2)}; last step ${JSON.stringify(last)}`);
  assert.ok(gains.every((g) => g > 1), `every held-out pair gains margin: ${gains.map((g) => g.toFixed(2))}`);
  assert.ok(mean(gains) > 10, `mean margin ${mean(before).toFixed(2)} → ${mean(tuned).toFixed(2)}`);

  // The tuned model is served like any other ft: model.
  const reply = await client.chat.completions.create({ model: job.fine_tuned_model!, messages: [{ role: 'user', content: 'Tell me about lamps.' }], max_tokens: 8, temperature: 0 });
  assert.equal(typeof reply.choices[0]!.message.content, 'string');
});

test('DPO beta outside (0, 2] is refused naming the field', async () => {
  const pairs = await upload(jsonl(THINGS.map(pair)), 'pairs.jsonl');
  for (const beta of [0, 2.5]) {
    await assert.rejects(
      client.fineTuning.jobs.create({ model: DEFAULT_MODEL_ID, training_file: pairs, method: { type: 'dpo', dpo: { hyperparameters: { beta } } } }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'method.dpo.hyperparameters.beta',
    );
  }
});
