// Model import and export through the real server: an independently written PEFT adapter imported, listed, served with
// the expected log-probabilities (official openai SDK), trained on, exported (PEFT tar, GGUF) and re-imported with
// identical answers, deleted; broken adapters refused by name with nothing registered; projects isolated; the CLI.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import OpenAI, { toFile } from 'openai';
import { extract } from 'tar';
import { loadAdapter } from '../../src/engine/lora/peft.ts';
import { parseModelConfig } from '../../src/engine/models/config.ts';
import { DEFAULT_MODEL_ID, defaultModelConfigJson } from '../../src/engine/models/default-model.ts';
import { computeLogits } from '../../src/engine/train/verify.ts';
import { randomAdapter, writeForeignAdapter } from '../engine/export/export-fixtures.ts';
import { createKey, startTestServer, type TestServer } from '../helpers/server.ts';
import { waitForJob } from '../helpers/wait.ts';

const config = parseModelConfig(defaultModelConfigJson());
const PROMPT = [257, 117, 115, 101, 114, 10, 72, 111, 119, 32, 108, 111, 110, 103, 63, 258, 10, 257, 97, 115, 115, 105, 115, 116, 97, 110, 116, 10];
const FOREIGN_CONFIG = { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'], lora_dropout: 0.1, task_type: 'CAUSAL_LM', base_model_name_or_path: 'somewhere/else' };

let root: string;
let server: TestServer;
let alpha: OpenAI;
let alphaKey: string;
let betaKey: string;
let foreignDir: string;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'localtune-transfer-'));
  const dataDir = join(root, 'data');
  mkdirSync(dataDir);
  alphaKey = await createKey(dataDir, 'alpha');
  betaKey = await createKey(dataDir, 'beta');
  server = await startTestServer({ dataDir, env: { LOCALTUNE_TRAIN_THREADS: '1' } });
  alpha = server.client(alphaKey);
  foreignDir = join(root, 'foreign');
  writeForeignAdapter(foreignDir, randomAdapter(config, 3, { r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'] }).tensors, FOREIGN_CONFIG);
});

after(async () => {
  await server?.stop();
  rmSync(root, { recursive: true, force: true });
});

/** POST /v1/models/import with the two files of `dir` (multipart, as curl -F sends it). */
async function importAdapter(dir: string, extra: Record<string, string> = {}, key = alphaKey): Promise<Response> {
  const form = new FormData();
  form.append('adapter_config', new Blob([readFileSync(join(dir, 'adapter_config.json'))]), 'adapter_config.json');
  form.append('adapter_model', new Blob([readFileSync(join(dir, 'adapter_model.safetensors'))]), 'adapter_model.safetensors');
  form.append('base_model', DEFAULT_MODEL_ID);
  for (const [k, v] of Object.entries(extra)) form.append(k, v);
  return fetch(`${server.baseURL}/models/import`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: form });
}

const exportUrl = (model: string, query: string) => `${server.baseURL}/models/${encodeURIComponent(model)}/export?${query}`;
const get = (url: string, key = alphaKey) => fetch(url, { headers: { authorization: `Bearer ${key}` } });

/** The served log-probabilities of PROMPT's tokens 1.. (legacy completions with echo, as evaluation harnesses ask). */
async function promptLogprobs(model: string): Promise<number[]> {
  const res = await alpha.completions.create({ model, prompt: PROMPT, max_tokens: 0, echo: true, logprobs: 0 });
  return res.choices[0].logprobs!.token_logprobs!.slice(1) as number[];
}

/** The engine's log-probabilities of PROMPT's tokens 1.. with the adapter in `dir`, on the server's copy of the base. */
async function expectedLogprobs(dir: string): Promise<number[]> {
  const adapter = loadAdapter(dir, config);
  const modelDir = join(server.dataDir, 'models', DEFAULT_MODEL_ID);
  const { logits } = await computeLogits({ modelDir, cacheDir: join(root, 'cache'), tokens: [PROMPT], adapter: { lora: adapter.config, tensors: adapter.tensors }, device: 'cpu' });
  const V = config.vocabSize;
  return PROMPT.slice(1).map((id, t) => {
    const row = logits[0].subarray(t * V, (t + 1) * V);
    const max = Math.max(...row);
    return row[id] - max - Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
  });
}

describe('import and export of a fine-tuned model', () => {
  let imported: string;

  it('imports an independently written bf16 adapter as a project model that is listed and serves the expected log-probabilities', async () => {
    const res = await importAdapter(foreignDir, { suffix: 'from-peft' });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    imported = body.id;
    assert.match(imported, new RegExp(`^ft:${DEFAULT_MODEL_ID}:alpha:from-peft:[A-Za-z0-9]{8}$`));
    assert.equal(body.parent, DEFAULT_MODEL_ID);
    const listed = (await alpha.models.list()).data.find((m) => m.id === imported);
    assert.equal(listed?.owned_by, 'alpha');
    const served = await promptLogprobs(imported);
    const expected = await expectedLogprobs(foreignDir);
    served.forEach((lp, i) => assert.ok(Math.abs(lp - expected[i]) < 1e-4, `token ${i + 1}: served ${lp}, expected ${expected[i]}`));
  });

  it('exports it as a PEFT tar that re-imports with identical answers', async () => {
    const res = await get(exportUrl(imported, 'format=peft'));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-tar');
    const dir = join(root, 'exported-peft');
    mkdirSync(dir);
    await pipeline(Readable.fromWeb(res.body as ReadableStream<Uint8Array>), extract({ cwd: dir }));
    assert.deepEqual(readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
    const again = await (await importAdapter(dir)).json();
    assert.deepEqual(await promptLogprobs(again.id), await promptLogprobs(imported));
  });

  it('exports GGUF files, refuses impossible combinations with a 400 naming the parameter, and hides other projects\' models', async () => {
    const gguf = await get(exportUrl(imported, 'format=gguf&dtype=q8_0'));
    assert.equal(gguf.status, 200);
    assert.match(gguf.headers.get('content-disposition')!, /filename=".*\.q8_0\.gguf"/);
    assert.equal(Buffer.from(await gguf.arrayBuffer()).subarray(0, 4).toString(), 'GGUF');
    const lora = await get(exportUrl(imported, 'format=gguf-lora'));
    assert.equal(Buffer.from(await lora.arrayBuffer()).subarray(0, 4).toString(), 'GGUF');

    const q8Merged = await get(exportUrl(imported, 'format=merged&dtype=q8_0'));
    assert.equal(q8Merged.status, 400);
    assert.equal((await q8Merged.json()).error.param, 'dtype');
    const basePeft = await get(exportUrl(DEFAULT_MODEL_ID, 'format=peft'));
    assert.equal(basePeft.status, 400);
    assert.equal((await basePeft.json()).error.param, 'format');
    const badFormat = await get(exportUrl(imported, 'format=onnx'));
    assert.equal(badFormat.status, 400);
    assert.equal((await badFormat.json()).error.param, 'format');
    const otherProject = await get(exportUrl(imported, 'format=gguf'), betaKey);
    assert.equal(otherProject.status, 404);
    assert.equal((await otherProject.json()).error.code, 'model_not_found');
  });

  it('is the model of a new job: training continues from it', async () => {
    const line = JSON.stringify({ messages: [{ role: 'user', content: 'Ping?' }, { role: 'assistant', content: 'Pong.' }] });
    const file = await alpha.files.create({ file: await toFile(Buffer.from(Array(10).fill(line).join('\n')), 'train.jsonl'), purpose: 'fine-tune' });
    const created = await alpha.fineTuning.jobs.create({ model: imported, training_file: file.id, method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 1, batch_size: 10 } } } });
    const job = await waitForJob(alpha, created.id, { context: () => server.output().slice(-4000) });
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const events = (await alpha.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.map((e) => e.message).join('\n');
    assert.match(server.output() + events, /continuing the adapter/);
  });

  it('is deleted like any fine-tuned model, folder included', async () => {
    const before = readdirSync(join(server.dataDir, 'imports')).length;
    assert.equal((await alpha.models.delete(imported)).deleted, true);
    assert.equal(readdirSync(join(server.dataDir, 'imports')).length, before - 1);
    assert.ok(!(await alpha.models.list()).data.some((m) => m.id === imported));
  });
});

describe('broken adapters', () => {
  const { tensors } = randomAdapter(config, 4, { r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'] });
  const qA = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const vB = 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight';
  const without = (name: string) => new Map([...tensors].filter(([n]) => n !== name));
  const cases: { name: string; tensors: typeof tensors; config?: Record<string, unknown>; param: string; names: RegExp }[] = [
    { name: 'a tensor of another rank', tensors: new Map([...tensors, [qA, { dims: [8, config.hiddenSize], data: new Float32Array(8 * config.hiddenSize) }]]), param: 'adapter_model', names: /layers\.0\.self_attn\.q_proj\.lora_A\.default\.weight has shape \[8,256\]/ },
    { name: 'a missing lora_B', tensors: without(vB), param: 'adapter_model', names: /layers\.1\.self_attn\.v_proj\.lora_B\.weight is missing/ },
    { name: 'a fully trained module beside the LoRA', tensors: new Map([...tensors, ['base_model.model.lm_head.weight', { dims: [config.vocabSize, config.hiddenSize], data: new Float32Array(config.vocabSize * config.hiddenSize) }]]), param: 'adapter_model', names: /lm_head/ },
    { name: 'DoRA', tensors, config: { ...FOREIGN_CONFIG, use_dora: true }, param: 'adapter_config', names: /use_dora/ },
    { name: 'modules_to_save', tensors, config: { ...FOREIGN_CONFIG, modules_to_save: ['lm_head'] }, param: 'adapter_config', names: /modules_to_save/ },
    { name: 'an unsupported target module', tensors, config: { ...FOREIGN_CONFIG, target_modules: ['q_proj', 'embed_tokens'] }, param: 'adapter_config', names: /target_modules/ },
    { name: 'an adapter for another model shape', tensors: new Map([[qA, { dims: [4, 64], data: new Float32Array(256) }]]), param: 'adapter_model', names: /q_proj\.lora_A\.default\.weight has shape \[4,64\], expected \[4,256\]/ },
  ];

  for (const c of cases) {
    it(`${c.name}: a 400 naming it, nothing registered`, async () => {
      const dir = join(root, 'broken', c.name.replace(/\W+/g, '-'));
      writeForeignAdapter(dir, c.tensors, c.config ?? FOREIGN_CONFIG);
      const models = (await alpha.models.list()).data.length;
      const imports = readdirSync(join(server.dataDir, 'imports')).length;
      const res = await importAdapter(dir);
      const body = await res.json();
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(body.error.param, c.param);
      assert.match(body.error.message, c.names);
      assert.doesNotMatch(body.error.message, new RegExp(server.dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
      assert.equal((await alpha.models.list()).data.length, models);
      assert.equal(readdirSync(join(server.dataDir, 'imports')).length, imports);
    });
  }

  it('a base model that does not exist, or a missing part, is a 400 naming the field', async () => {
    const res = await importAdapter(foreignDir, { base_model: 'no-such-model' });
    assert.equal(res.status, 400);
    const form = new FormData();
    form.append('base_model', DEFAULT_MODEL_ID);
    form.append('adapter_config', new Blob([readFileSync(join(foreignDir, 'adapter_config.json'))]), 'adapter_config.json');
    const missing = await fetch(`${server.baseURL}/models/import`, { method: 'POST', headers: { authorization: `Bearer ${alphaKey}` }, body: form });
    assert.equal(missing.status, 400);
    assert.equal((await missing.json()).error.param, 'adapter_model');
  });
});

describe('command line', () => {
  const run = promisify(execFile);
  const cli = (...args: string[]) =>
    run(process.execPath, ['bin/localtune.js', ...args, '--base-url', server.baseURL, '--api-key', alphaKey], { cwd: fileURLToPath(new URL('../..', import.meta.url)) });

  it('models import registers an adapter folder; export writes a GGUF file and a merged directory', async () => {
    const { stdout } = await cli('models', 'import', foreignDir, '--base-model', DEFAULT_MODEL_ID, '--suffix', 'cli');
    const id = stdout.trim();
    assert.match(id, /^ft:localtune-default:alpha:cli:/);
    const file = join(root, 'cli.gguf');
    await cli('export', id, '--format', 'gguf', '--dtype', 'f32', '--out', file);
    assert.equal(readFileSync(file).subarray(0, 4).toString(), 'GGUF');
    const dir = join(root, 'cli-merged');
    await cli('export', id, '--format', 'merged', '--out', dir);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(existsSync(join(dir, f)), f);
    writeFileSync(join(dir, 'keep'), '');
    await assert.rejects(cli('export', id, '--format', 'merged', '--out', dir), /already exists/);
  });
});
