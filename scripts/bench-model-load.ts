// `npm run bench -- model-load`: how the API answers while a base model loads for the first time (weights converted, graph built, session created).
// A SmolLM2-135M-shaped model (random weights, the built-in byte-level tokenizer) is asked for one token on a fresh
// cache while GET /v1/models and a job retrieve are sent back to back; their latencies are measured in the same run.
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toFile } from 'openai';
import { ensureDefaultModel } from '../src/engine/models/default-model.ts';
import { createRng } from '../src/engine/random.ts';
import { writeRandomModel } from './lib/bench-models.ts';
import { startTestServer } from '../test/helpers/server.ts';

const MODEL_ID = 'smollm2-135m-shape';
const SMOLLM2_135M = {
  architectures: ['LlamaForCausalLM'], hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3,
  vocab_size: 49152, rms_norm_eps: 1e-5, rope_theta: 100000, max_position_embeddings: 2048, tie_word_embeddings: true,
};

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-bench-model-load-'));
process.on('exit', () => rmSync(dataDir, { recursive: true, force: true }));
const modelsDir = join(dataDir, 'models');
const defaultDir = ensureDefaultModel(modelsDir);
const modelDir = join(modelsDir, MODEL_ID);
writeRandomModel(modelDir, SMOLLM2_135M, createRng(1));
for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join(defaultDir, f), join(modelDir, f));

const server = await startTestServer({ dataDir });
try {
  // Retries on: a request stalled past the server's keep-alive timeout can meet a closed socket, and its retry is part of its latency.
  const client = server.client('sk-bench', { maxRetries: 2 });
  const line = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }] });
  const file = await client.files.create({ file: await toFile(Buffer.from(Array(10).fill(line).join('\n')), 'train.jsonl'), purpose: 'fine-tune' });
  const job = await client.fineTuning.jobs.create({ model: 'localtune-default', training_file: file.id });
  await client.fineTuning.jobs.cancel(job.id); // only its record is wanted: no training competes for the cores

  const t0 = performance.now();
  let loadMs = 0;
  const loading = client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }).then(() => {
    loadMs = performance.now() - t0;
  });
  const latencies: Record<'models' | 'job', number[]> = { models: [], job: [] };
  const timed = async (kind: keyof typeof latencies, call: () => Promise<unknown>) => {
    const t = performance.now();
    await call();
    latencies[kind].push(performance.now() - t);
  };
  while (loadMs === 0) {
    await timed('models', () => client.models.list());
    await timed('job', () => client.fineTuning.jobs.retrieve(job.id));
  }
  await loading;

  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
  const f = (x: number) => x.toFixed(1);
  console.log(`model load: ${MODEL_ID} (30 layers, 576 wide, vocab 49152, fp32 CPU), first request answered after ${f(loadMs)} ms`);
  for (const [kind, xs] of Object.entries(latencies)) {
    const what = kind === 'models' ? 'GET /v1/models' : 'job retrieve';
    console.log(`  ${what} during the load: ${xs.length} requests, p50 ${f(pct(xs, 50))} ms, p99 ${f(pct(xs, 99))} ms, max ${f(Math.max(...xs))} ms`);
  }
} finally {
  await server.stop();
}
