// LoRA adapters: seeded PEFT-style init, PEFT file round trip (names, config fields), and the PEFT/vLLM name variants on import.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveLoraConfig } from '../../../src/engine/lora/config.ts';
import { initAdapter } from '../../../src/engine/lora/init.ts';
import { loadAdapter, saveAdapter, savedQuantizedLayout } from '../../../src/engine/lora/peft.ts';
import { QUANTIZED_LAYOUT } from '../../../src/engine/models/weight-cache.ts';
import { parseModelConfig } from '../../../src/engine/models/config.ts';
import { readSafetensorsHeader, writeSafetensors, type TensorToWrite } from '../../../src/engine/models/safetensors.ts';
import { tinyConfigJson } from '../models/tiny-model.ts';

const model = parseModelConfig(tinyConfigJson); // D 8, F 12, L 2, NH 2, NKV 1, HD 4
const tmp = () => mkdtempSync(join(tmpdir(), 'lt-lora-'));

test('init: A uniform within ±1/√in from the seed, B zero, PEFT names and shapes', () => {
  const config = resolveLoraConfig({ r: 4 });
  const a = initAdapter(model, config, 9);
  assert.equal(a.size, 2 * 7 * 2);
  const down = a.get('base_model.model.model.layers.1.mlp.down_proj.lora_A.weight')!;
  assert.deepEqual(down.dims, [4, 12]);
  const bound = 1 / Math.sqrt(12);
  assert.ok(down.data.every((v) => Math.abs(v) <= bound) && down.data.some((v) => Math.abs(v) > bound / 2));
  const kB = a.get('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight')!;
  assert.deepEqual(kB.dims, [4, 4]);
  assert.ok(kB.data.every((v) => v === 0));
  assert.deepEqual(initAdapter(model, config, 9), a);
  assert.notDeepEqual(initAdapter(model, config, 10).get('base_model.model.model.layers.1.mlp.down_proj.lora_A.weight'), down);
});

test('save -> load round trip; adapter_config.json has the PEFT fields', () => {
  const dir = join(tmp(), 'adapter');
  const config = resolveLoraConfig({ r: 2, alpha: 4, dropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'] });
  const tensors = initAdapter(model, config, 1);
  for (const [name, t] of tensors) if (name.includes('lora_B')) t.data.fill(0.25);
  saveAdapter(dir, config, tensors, 'tiny-qwen');
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(
    { peft_type: cfg.peft_type, task_type: cfg.task_type, r: cfg.r, lora_alpha: cfg.lora_alpha, lora_dropout: cfg.lora_dropout, target_modules: cfg.target_modules, base: cfg.base_model_name_or_path, bias: cfg.bias, fan_in_fan_out: cfg.fan_in_fan_out },
    { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 2, lora_alpha: 4, lora_dropout: 0.1, target_modules: ['q_proj', 'v_proj', 'down_proj'], base: 'tiny-qwen', bias: 'none', fan_in_fan_out: false },
  );
  assert.deepEqual(Object.keys(cfg), Object.keys(cfg).sort());
  assert.ok(readSafetensorsHeader(join(dir, 'adapter_model.safetensors')).tensors.has('base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'));
  const loaded = loadAdapter(dir, model);
  assert.deepEqual(loaded.config, config);
  assert.equal(loaded.baseModelName, 'tiny-qwen');
  assert.deepEqual(loaded.tensors, tensors);
});

function writePeft(dir: string, config: Record<string, unknown>, tensors: Map<string, TensorToWrite>): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 16, target_modules: ['q_proj'], ...config }));
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors);
}

function qTensors(naming: (layer: number, m: 'A' | 'B') => string, dtype: 'F32' | 'BF16' = 'F32'): Map<string, TensorToWrite> {
  const t = new Map<string, TensorToWrite>();
  for (const layer of [0, 1]) {
    t.set(naming(layer, 'A'), { dims: [2, 8], data: new Float32Array(16).fill(layer + 1), dtype });
    t.set(naming(layer, 'B'), { dims: [8, 2], data: new Float32Array(16).fill(-0.5), dtype });
  }
  return t;
}

test('imports vLLM-style names, adapter-name infixes and bf16; rsLoRA becomes plain alpha', () => {
  const dir = join(tmp(), 'peft');
  for (const naming of [
    (l: number, m: string) => `model.layers.${l}.self_attn.q_proj.lora_${m}.weight`,
    (l: number, m: string) => `base_model.model.model.layers.${l}.self_attn.q_proj.lora_${m}`,
    (l: number, m: string) => `base_model.model.model.layers.${l}.self_attn.q_proj.lora_${m}.default.weight`,
  ]) {
    writePeft(dir, {}, qTensors(naming, 'BF16'));
    const a = loadAdapter(dir, model);
    assert.deepEqual(a.config, { r: 2, alpha: 16, dropout: 0, targetModules: ['q_proj'] });
    assert.deepEqual([...a.tensors.keys()], [
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
      'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight', 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight',
    ]);
    assert.ok(a.tensors.get('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')!.data.every((v) => v === 2));
  }
  writePeft(dir, { use_rslora: true }, qTensors((l, m) => `model.layers.${l}.self_attn.q_proj.lora_${m}.weight`));
  assert.equal(loadAdapter(dir, model).config.alpha, 16 * Math.sqrt(2));
});

test('clear errors: shapes, partial layers, foreign tensors, unsupported PEFT options, missing files', () => {
  const dir = join(tmp(), 'bad');
  const peftName = (l: number, m: string) => `base_model.model.model.layers.${l}.self_attn.q_proj.lora_${m}.weight`;
  const wrongShape = qTensors(peftName);
  wrongShape.set(peftName(1, 'B'), { dims: [4, 2], data: new Float32Array(8) });
  writePeft(dir, {}, wrongShape);
  assert.throws(() => loadAdapter(dir, model), /layers\.1\.self_attn\.q_proj\.lora_B\.weight has shape \[4,2\], expected \[8,2\] for r=2/);
  const partial = qTensors(peftName);
  partial.delete(peftName(1, 'A'));
  writePeft(dir, {}, partial);
  assert.throws(() => loadAdapter(dir, model), /layers\.1\.self_attn\.q_proj\.lora_A\.weight is missing/);
  const foreign = qTensors(peftName);
  foreign.set('base_model.model.lm_head.weight', { dims: [1], data: new Float32Array(1) });
  writePeft(dir, {}, foreign);
  assert.throws(() => loadAdapter(dir, model), /tensor base_model\.model\.lm_head\.weight is not a LoRA A\/B tensor/);
  const tooDeep = qTensors(peftName);
  tooDeep.set(peftName(5, 'A'), { dims: [2, 8], data: new Float32Array(16) });
  writePeft(dir, {}, tooDeep);
  assert.throws(() => loadAdapter(dir, model), /layer 5, the model has 2/);
  writePeft(dir, { use_dora: true }, qTensors(peftName));
  assert.throws(() => loadAdapter(dir, model), /use_dora true is not supported/);
  writePeft(dir, { rank_pattern: { q_proj: 4 } }, qTensors(peftName));
  assert.throws(() => loadAdapter(dir, model), /rank_pattern/);
  writePeft(dir, { peft_type: 'IA3' }, qTensors(peftName));
  assert.throws(() => loadAdapter(dir, model), /peft_type "IA3"/);
  writePeft(dir, {}, qTensors(peftName));
  rmSync(join(dir, 'adapter_model.safetensors'));
  writeFileSync(join(dir, 'adapter_model.bin'), '');
  assert.throws(() => loadAdapter(dir, model), /adapter_model\.safetensors is missing \(adapter_model\.bin/);
  rmSync(join(dir, 'adapter_config.json'));
  assert.throws(() => loadAdapter(dir, model), /adapter_config\.json is missing/);
});

test('saved adapters record the quantized-base layout they were fitted to; adapters saved elsewhere record none', () => {
  const dir = join(tmp(), 'ours');
  const lora = resolveLoraConfig({ r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj'] });
  saveAdapter(dir, lora, initAdapter(model, lora, 1), 'tiny');
  assert.equal(savedQuantizedLayout(dir), QUANTIZED_LAYOUT);
  const peft = join(tmp(), 'peft');
  writePeft(peft, {}, qTensors((l, m) => `model.layers.${l}.self_attn.q_proj.lora_${m}.weight`));
  assert.equal(savedQuantizedLayout(peft), null);
});
