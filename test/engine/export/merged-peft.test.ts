// Merged and PEFT exports read back by localtune: the merged directory (sharded) is a base model answering like base +
// adapter; the PEFT export reloads to the same tensors; an adapter written by an independent PEFT-layout writer loads.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportModel } from '../../../src/engine/export/export-model.ts';
import { loadAdapter } from '../../../src/engine/lora/peft.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { readModelDir } from '../../../src/engine/models/model-dir.ts';
import { bfloat16ToFloat32, float32ToBfloat16, readSafetensorsHeader } from '../../../src/engine/models/safetensors.ts';
import { computeLogits } from '../../../src/engine/train/verify.ts';
import { TINY_LLAMA_CONFIG, randomAdapter, writeForeignAdapter, writeRandomAdapter, writeTinyModel } from './export-fixtures.ts';

const TOKENS = [
  [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100],
  [257, 117, 115, 101, 114, 10, 72, 105, 258],
];

let root: string;
let modelDir: string;
let adapterDir: string;
let config: ModelConfig;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'localtune-merged-'));
  modelDir = join(root, 'tiny');
  config = writeTinyModel(modelDir, { ...TINY_LLAMA_CONFIG, _name_or_path: 'example-org/tiny-llama' }, 'bytes', 5);
  adapterDir = join(root, 'adapter');
  writeRandomAdapter(adapterDir, config, 6, { targetModules: ['q_proj', 'v_proj', 'down_proj'] });
});

after(() => rmSync(root, { recursive: true, force: true }));

/** Largest |a − b| over every row, divided by the largest |a|. */
function relativeDiff(a: Float32Array[], b: Float32Array[]): number {
  let diff = 0;
  let scale = 0;
  a.forEach((row, i) => row.forEach((v, j) => {
    diff = Math.max(diff, Math.abs(v - b[i][j]));
    scale = Math.max(scale, Math.abs(v));
  }));
  return diff / scale;
}

async function logitsOf(dir: string, adapter?: string): Promise<Float32Array[]> {
  const loaded = adapter ? loadAdapter(adapter, config) : null;
  const { logits } = await computeLogits({ modelDir: dir, cacheDir: join(root, 'cache', `${dir.split('/').at(-1)}`), tokens: TOKENS, adapter: loaded ? { lora: loaded.config, tensors: loaded.tensors } : undefined, device: 'cpu' });
  return logits;
}

describe('merged export', () => {
  it('is a sharded Hugging Face directory that localtune loads as a base model answering like base + adapter (≤ 1e-5)', async () => {
    const out = join(root, 'merged');
    const files = exportModel({ modelDir, adapterDir, modelId: 'ft:tiny:p:x:1', format: 'merged', dtype: null, out, maxShardBytes: 60_000 });
    assert.ok(files.includes('model.safetensors.index.json'), files.join(', '));
    assert.ok(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length >= 2, files.join(', '));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(existsSync(join(out, f)), f);
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8'));
    assert.equal(Object.keys(index.weight_map).length, readModelDir(modelDir).tensors.size);
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'float32');
    const rel = relativeDiff(await logitsOf(modelDir, adapterDir), await logitsOf(out));
    assert.ok(rel <= 1e-5, `relative difference ${rel}`);
  });

  it('writes the dtype asked for, and a base model without an adapter through the same path', () => {
    const out = join(root, 'base-bf16');
    exportModel({ modelDir, adapterDir: null, modelId: 'tiny', format: 'merged', dtype: 'bf16', out });
    const header = readSafetensorsHeader(join(out, 'model.safetensors'));
    assert.deepEqual(new Set([...header.tensors.values()].map((t) => t.dtype)), new Set(['BF16']));
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
  });

  it('refuses q8_0 and adapter formats of a base model, naming the parameter', () => {
    assert.throws(() => exportModel({ modelDir, adapterDir, modelId: 'x', format: 'merged', dtype: 'q8_0', out: join(root, 'q') }), (e: Error & { param?: string }) => e.param === 'dtype' && /q8_0/.test(e.message));
    assert.throws(() => exportModel({ modelDir, adapterDir: null, modelId: 'x', format: 'peft', dtype: null, out: join(root, 'p') }), (e: Error & { param?: string }) => e.param === 'format');
  });
});

describe('PEFT export', () => {
  it('reloads to the same tensors and names the base as the user gave it (config.json _name_or_path)', () => {
    const out = join(root, 'peft');
    exportModel({ modelDir, adapterDir, modelId: 'ft:tiny:p:x:1', format: 'peft', dtype: null, out });
    const config_ = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config_.base_model_name_or_path, 'example-org/tiny-llama');
    const a = loadAdapter(adapterDir, config);
    const b = loadAdapter(out, config);
    assert.deepEqual(b.config, a.config);
    for (const [name, t] of a.tensors) assert.deepEqual(b.tensors.get(name)!.data, t.data, name);
  });
});

describe('an adapter from an independent PEFT writer', () => {
  it('loads with its bf16 values, rsLoRA scaling and every tensor in place', async () => {
    const dir = join(root, 'foreign');
    const { tensors } = randomAdapter(config, 9, { r: 4, alpha: 8, targetModules: ['o_proj', 'up_proj'] });
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeForeignAdapter(dir, tensors, { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['o_proj', 'up_proj'], use_rslora: true, task_type: 'CAUSAL_LM' });
    const loaded = loadAdapter(dir, config);
    assert.equal(loaded.config.alpha, 8 * Math.sqrt(4)); // rsLoRA: alpha/√r = (alpha·√r)/r
    for (const [name, t] of tensors) assert.deepEqual(loaded.tensors.get(name)!.data, bfloat16ToFloat32(float32ToBfloat16(t.data)), name);
  });
});

describe('GGUF refusals', () => {
  it('a tokenizer that is not byte-level BPE (SentencePiece-style) is refused naming tokenizer.json', () => {
    const dir = join(root, 'spm');
    writeTinyModel(dir, TINY_LLAMA_CONFIG, 'bytes', 7);
    const tokenizer = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    tokenizer.decoder = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false };
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    assert.throws(
      () => exportModel({ modelDir: dir, adapterDir: null, modelId: 'spm', format: 'gguf', dtype: 'f16', out: join(root, 'spm.gguf') }),
      (e: Error & { param?: string }) => e.param === 'model' && /tokenizer\.json is not a byte-level BPE tokenizer/.test(e.message),
    );
    assert.ok(!existsSync(join(root, 'spm.gguf')));
  });
});
