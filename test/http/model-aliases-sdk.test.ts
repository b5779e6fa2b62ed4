// Model aliases (--model-aliases) through the official SDK: accepted by chat and completions, listed and retrieved with what they stand for, never deleted.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { DEFAULT_MODEL_ID, ensureDefaultModel } from '../../src/engine/models/default-model.ts';
import { registerFineTunedModel } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-aliases-'));
const TUNED = `ft:${DEFAULT_MODEL_ID}:default:house:Ab12Cd34`;
let server: TestServer;
let client: OpenAI;

before(async () => {
  ensureDefaultModel(join(dataDir, 'models'));
  await registerFineTunedModel(dataDir, { id: TUNED, project: 'default', base_model: DEFAULT_MODEL_ID, adapter_dir: 'adapters/house', job_id: null, step: null, created_at: 1_700_000_000, base_precision: 'fp32' });
  server = await startTestServer({ dataDir, args: ['--model-aliases', `gpt-4o-mini=${DEFAULT_MODEL_ID},house=${TUNED},ghost=no-such-model`] });
  client = server.client();
});
after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('chat and completions accept an alias and answer as the model it stands for', async () => {
  const ask = (model: string) => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello there' }], temperature: 0, max_completion_tokens: 8 });
  const [viaAlias, direct] = await Promise.all([ask('gpt-4o-mini'), ask(DEFAULT_MODEL_ID)]);
  assert.equal(viaAlias.model, 'gpt-4o-mini');
  assert.equal(viaAlias.choices[0]!.message.content, direct.choices[0]!.message.content);
  assert.equal(viaAlias.usage?.completion_tokens, direct.usage?.completion_tokens);

  const legacy = await client.completions.create({ model: 'gpt-4o-mini', prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
  assert.equal(legacy.model, 'gpt-4o-mini');
  assert.ok(legacy.usage!.completion_tokens > 0);

  await assert.rejects(ask('ghost'), (e: unknown) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
});

test('/v1/models lists aliases whose model exists, with alias_for; retrieve answers the same', async () => {
  const data = (await client.models.list()).data as (OpenAI.Model & { alias_for?: string; parent?: string; context_length?: number })[];
  const byId = new Map(data.map((m) => [m.id, m]));
  const base = byId.get(DEFAULT_MODEL_ID)!;
  assert.deepEqual(byId.get('gpt-4o-mini'), { ...base, id: 'gpt-4o-mini', alias_for: DEFAULT_MODEL_ID });
  assert.deepEqual(byId.get('house'), { id: 'house', object: 'model', created: 1_700_000_000, owned_by: 'default', parent: DEFAULT_MODEL_ID, alias_for: TUNED });
  assert.ok(byId.has(TUNED));
  assert.equal(byId.has('ghost'), false);

  assert.deepEqual(await client.models.retrieve('gpt-4o-mini'), byId.get('gpt-4o-mini'));
  await assert.rejects(client.models.retrieve('ghost'), OpenAI.NotFoundError);
});

test('an alias cannot be deleted, and deleting through it leaves its model alone', async () => {
  await assert.rejects(client.models.delete('house'), (e: unknown) => e instanceof OpenAI.BadRequestError && /alias/.test(e.message) && e.param === 'model');
  await assert.rejects(client.models.delete('gpt-4o-mini'), OpenAI.BadRequestError);
  assert.equal((await client.models.retrieve(TUNED)).id, TUNED);
});
