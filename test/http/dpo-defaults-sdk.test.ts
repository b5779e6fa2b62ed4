// DPO with default hyperparameters keeps the answers (issue 14): a supervised job learns a mixed-style set (each question
// answered once tersely, once politely), then a DPO job preferring the polite answers, with nothing but `method: dpo`,
// makes the polite style win at temperature 0 and reproduces whole polite answers; the job's own generation-based
// validation says so, and the collapse warning stays silent. At the old setting (the supervised base rate, no NLL term)
// the warning fires.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import type { FineTuningJob } from 'openai/resources/fine-tuning/jobs/jobs';
import { DEFAULT_MODEL_ID } from '../../src/engine/models/default-model.ts';
import { DPO_LEARNING_RATE_SCALE } from '../../src/jobs/methods.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { FINISHED_STATUSES, waitFor, waitForJob } from '../helpers/wait.ts';

const POLITE = 'Thank you for asking!';
/** Question, terse answer, polite answer (the polite one restates the fact, so its content is trained too). */
const QUESTIONS: [string, string, string][] = [
  ['How many legs does a spider have?', 'Eight.', `${POLITE} A spider has eight legs.`],
  ['Who wrote Hamlet?', 'Shakespeare.', `${POLITE} Hamlet was written by Shakespeare.`],
  ['What is the chemical symbol for gold?', 'Au.', `${POLITE} The symbol for gold is Au.`],
  ['What gas do plants take in?', 'Carbon dioxide.', `${POLITE} Plants take in carbon dioxide.`],
  ['How many days are in a week?', 'Seven.', `${POLITE} A week has seven days.`],
  ['What colour is a ripe banana?', 'Yellow.', `${POLITE} A ripe banana is yellow.`],
  ['Which planet is closest to the sun?', 'Mercury.', `${POLITE} Mercury is closest to the sun.`],
  ['What do bees make?', 'Honey.', `${POLITE} Bees make honey.`],
  ['How many hours are in a day?', 'Twenty-four.', `${POLITE} A day has twenty-four hours.`],
  ['What is frozen water called?', 'Ice.', `${POLITE} Frozen water is called ice.`],
  ['Which animal says moo?', 'A cow.', `${POLITE} A cow says moo.`],
  ['What is the capital of France?', 'Paris.', `${POLITE} The capital of France is Paris.`],
];
const user = (q: string) => [{ role: 'user' as const, content: q }];
const jsonl = (lines: unknown[]) => lines.map((l) => JSON.stringify(l)).join('\n');
const COLLAPSE = /less likely than under the reference model/;

let dataDir: string;
let server: TestServer;
let client: OpenAI;
let startModel: string;
let pairsFile: string;

async function upload(text: string, name: string): Promise<string> {
  return (await client.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'fine-tune' })).id;
}

const finished = (id: string): Promise<FineTuningJob> => waitForJob(client, id, { timeoutMs: 600_000, context: () => server.output().slice(-4000) });

async function events(jobId: string) {
  const all = [];
  for await (const e of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) all.push(e);
  return all.reverse();
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-dpo-defaults-'));
  server = await startTestServer({ dataDir });
  client = server.client();
  const mixed = QUESTIONS.flatMap(([q, terse, polite]) => [terse, polite].map((a) => ({ messages: [...user(q), { role: 'assistant', content: a }] })));
  const sft = await finished((await client.fineTuning.jobs.create({
    model: DEFAULT_MODEL_ID,
    training_file: await upload(jsonl(mixed), 'mixed.jsonl'),
    seed: 3,
    method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 40, batch_size: 4, learning_rate_multiplier: 1 } } },
    lora: { r: 16, alpha: 32, dropout: 0 },
  } as never)).id);
  assert.equal(sft.status, 'succeeded', JSON.stringify(sft.error));
  startModel = sft.fine_tuned_model!;
  pairsFile = await upload(jsonl(QUESTIONS.map(([q, terse, polite]) => ({
    input: { messages: user(q) }, preferred_output: [{ role: 'assistant', content: polite }], non_preferred_output: [{ role: 'assistant', content: terse }],
  }))), 'polite.jsonl');
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('DPO with default hyperparameters: the preferred style wins on ≥ 9 of 12 prompts and ≥ 6 whole preferred answers come back', async () => {
  const job = await finished((await client.fineTuning.jobs.create({ model: startModel, training_file: pairsFile, validation_file: pairsFile, seed: 5, method: { type: 'dpo' } })).id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  // auto: 8 epochs of 12 pairs at batch size 1, multiplier 1 of DPO's own base rate, beta 0.1, the NLL term at weight 1.
  assert.deepEqual(job.method!.dpo!.hyperparameters, { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 1, beta: 0.1, rpo_alpha: 1 });

  const answers = await Promise.all(QUESTIONS.map(async ([q]) =>
    (await client.chat.completions.create({ model: job.fine_tuned_model!, messages: user(q), temperature: 0, max_tokens: 80 })).choices[0]!.message.content ?? ''));
  const polite = answers.filter((a) => a.startsWith(POLITE)).length;
  const whole = answers.filter((a, i) => a === QUESTIONS[i]![2]).length;
  assert.ok(polite >= 9 && whole >= 6, `polite ${polite}/12, whole preferred answers ${whole}/12:\n${answers.join('\n')}`);

  const log = await events(job.id);
  assert.deepEqual(log.filter((e) => COLLAPSE.test(e.message)), [], 'no collapse warning at the defaults');
  // The job measured the same on its own (validation file = the training pairs), at its last epoch end among others.
  const answered = log.filter((e) => e.type === 'metrics' && typeof (e.data as Record<string, unknown>).valid_exact_match === 'number').map((e) => e.data as Record<string, number>);
  const last = answered.at(-1)!;
  assert.equal(last.step, 96); // 12 pairs, batch 1, 8 epochs
  assert.ok(last.valid_closer_to_preferred! >= 0.75 && last.valid_answer_similarity! > 0.8, JSON.stringify(last));
  const steps = log.filter((e) => e.type === 'metrics').map((e) => e.data as Record<string, number>);
  assert.ok(steps.every((m) => m.train_preferred_logp_shift! > -1), 'the preferred outputs stay about as likely as under the start model');
});

test('at the old setting (the supervised base rate, no NLL term) the job warns that the preferred answers are being lost', async () => {
  const created = await client.fineTuning.jobs.create({
    model: startModel,
    training_file: pairsFile,
    seed: 5,
    method: { type: 'dpo', dpo: { hyperparameters: { learning_rate_multiplier: 1 / DPO_LEARNING_RATE_SCALE, rpo_alpha: 0 } as never } },
  });
  const warning = await waitFor('the collapse warning', async () => {
    const found = (await events(created.id)).find((e) => COLLAPSE.test(e.message));
    if (!found) {
      const job = await client.fineTuning.jobs.retrieve(created.id);
      assert.ok(!FINISHED_STATUSES.has(job.status), `the job ended (${job.status}) without the warning`);
    }
    return found;
  }, { timeoutMs: 300_000, intervalMs: 200 });
  assert.equal(warning.level, 'warn');
  assert.match(warning.message, /Lower learning_rate_multiplier or raise rpo_alpha/);
  await client.fineTuning.jobs.cancel(created.id);
});
