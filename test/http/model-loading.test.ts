// A base model's first load (weight conversion, graph, session) runs off the event loop: other requests are answered while it converts.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toFile } from 'openai';
import { ensureDefaultModel } from '../../src/engine/models/default-model.ts';
import { parseModelConfig } from '../../src/engine/models/config.ts';
import { baseParameters } from '../../src/engine/models/parameters.ts';
import { writeSafetensors, type TensorToWrite } from '../../src/engine/models/safetensors.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { settleOrder, waitFor } from '../helpers/wait.ts';

const MODEL_ID = 'slow-to-convert';
/** ~42M parameters (168 MB of float32): converting them takes long enough to be caught in the act. */
const CONFIG = {
  architectures: ['LlamaForCausalLM'], hidden_size: 512, intermediate_size: 1408, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 8,
  vocab_size: 16000, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 512, tie_word_embeddings: false,
};

let dataDir: string;
let server: TestServer;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-model-loading-'));
  const modelsDir = join(dataDir, 'models');
  const defaultDir = ensureDefaultModel(modelsDir);
  const dir = join(modelsDir, MODEL_ID);
  mkdirSync(dir);
  // The built-in byte-level tokenizer: its ids fit any vocabulary this large.
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(defaultDir, f), join(dir, f));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(CONFIG));
  const weights = new Map<string, TensorToWrite>();
  for (const p of baseParameters(parseModelConfig(CONFIG))) weights.set(p.name, { dims: p.dims, data: new Float32Array(p.dims.reduce((a, b) => a * b, 1)).fill(0.01) });
  writeSafetensors(join(dir, 'model.safetensors'), weights);
  server = await startTestServer({ dataDir });
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('while a model converts its weights for its first request, GET /v1/models and a job retrieve are answered', { timeout: 180_000 }, async () => {
  const client = server.client();
  const file = await client.files.create({ file: await toFile(Buffer.from(Array(10).fill(JSON.stringify({ messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] })).join('\n')), 't.jsonl'), purpose: 'fine-tune' });
  const job = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: file.id });
  await client.fineTuning.jobs.cancel(job.id);

  const cacheDir = join(dataDir, 'cache', MODEL_ID);
  const converting = () => existsSync(cacheDir) && readdirSync(cacheDir).some((f) => f.endsWith('.tmp'));
  const { order, track } = settleOrder();
  const first = track('load', client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }));
  await waitFor('the weight conversion to start', converting, { intervalMs: 5, context: () => server.output() });
  const [models, retrieved] = await Promise.all([track('models', client.models.list()), track('job', client.fineTuning.jobs.retrieve(job.id))]);
  // Answered while the conversion was still writing its temp file: nothing waited for it.
  assert.ok(converting(), 'the weight conversion had already finished when the other requests were answered');
  assert.ok(models.data.some((m) => m.id === MODEL_ID));
  assert.equal(retrieved.id, job.id);
  assert.equal((await first).choices.length, 1);
  assert.deepEqual(order.slice(2), ['load']);
  assert.ok(existsSync(join(cacheDir, 'weights.float32.json')));
});
