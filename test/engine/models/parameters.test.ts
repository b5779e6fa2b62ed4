// The parameter table: names, shapes and counts for real model shapes, and the LoRA/PEFT name table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelConfig } from '../../../src/engine/models/config.ts';
import {
  LORA_TARGETS, baseParameters, layerParameterNames, lmHeadName, loraModules, loraParameters, parameterCount, parseLoraTensorName,
} from '../../../src/engine/models/parameters.ts';

const smollm2Json = {
  architectures: ['LlamaForCausalLM'], hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9,
  num_key_value_heads: 3, vocab_size: 49152, rms_norm_eps: 1e-5, rope_theta: 100000, max_position_embeddings: 8192, tie_word_embeddings: true,
};
const smollm2 = parseModelConfig(smollm2Json);
const qwen = parseModelConfig({
  architectures: ['Qwen2ForCausalLM'], hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
  num_key_value_heads: 2, vocab_size: 151936, rms_norm_eps: 1e-6, rope_theta: 1e6, max_position_embeddings: 32768, tie_word_embeddings: true,
});

test('SmolLM2-135M has its published 134,515,008 parameters', () => {
  const specs = baseParameters(smollm2);
  assert.equal(parameterCount(specs), 134_515_008);
  assert.equal(specs.length, 1 + 30 * 9 + 1);
  assert.ok(!specs.some((s) => s.name === 'lm_head.weight'));
  assert.equal(lmHeadName(smollm2), 'model.embed_tokens.weight');
  const byName = new Map(specs.map((s) => [s.name, s.dims]));
  assert.deepEqual(byName.get('model.layers.3.self_attn.k_proj.weight'), [192, 576]);
  assert.deepEqual(byName.get('model.layers.3.mlp.down_proj.weight'), [576, 1536]);
});

test('Qwen2.5-0.5B has q/k/v biases and its published 494,032,768 parameters', () => {
  const specs = baseParameters(qwen);
  assert.equal(parameterCount(specs), 494_032_768);
  const names = layerParameterNames(qwen, 7);
  assert.equal(names.bias.q_proj, 'model.layers.7.self_attn.q_proj.bias');
  assert.equal(names.bias.o_proj, null);
  assert.equal(names.bias.up_proj, null);
  assert.deepEqual(specs.find((s) => s.name === 'model.layers.7.self_attn.v_proj.bias')!.dims, [128]);
});

test('Llama with attention_bias has an o_proj bias too', () => {
  const biased = parseModelConfig({ ...smollm2Json, attention_bias: true });
  const names = layerParameterNames(biased, 0);
  assert.equal(names.bias.o_proj, 'model.layers.0.self_attn.o_proj.bias');
  assert.equal(names.bias.k_proj, 'model.layers.0.self_attn.k_proj.bias');
  assert.equal(names.bias.gate_proj, null);
  assert.equal(parameterCount(baseParameters(biased)), 134_515_008 + 30 * (576 + 192 + 192 + 576));
});

test('untied models carry lm_head.weight', () => {
  const untied = { ...smollm2, tieWordEmbeddings: false };
  const specs = baseParameters(untied);
  assert.deepEqual(specs.at(-1), { name: 'lm_head.weight', dims: [49152, 576] });
  assert.equal(lmHeadName(untied), 'lm_head.weight');
});

test('LoRA modules: PEFT names and [r, in] / [out, r] shapes', () => {
  const mods = loraModules(smollm2, ['v_proj', 'q_proj']);
  assert.equal(mods.length, 60);
  assert.deepEqual(mods[0], {
    layer: 0, target: 'q_proj', in: 576, out: 576, baseWeight: 'model.layers.0.self_attn.q_proj.weight',
    loraA: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
    loraB: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
  });
  const specs = loraParameters(smollm2, LORA_TARGETS, 8);
  const gate = specs.filter((s) => s.name.includes('layers.2.mlp.gate_proj'));
  assert.deepEqual(gate, [
    { name: 'base_model.model.model.layers.2.mlp.gate_proj.lora_A.weight', dims: [8, 576] },
    { name: 'base_model.model.model.layers.2.mlp.gate_proj.lora_B.weight', dims: [1536, 8] },
  ]);
});

test('LoRA tensor names as PEFT, vLLM and older tools write them', () => {
  const want = { layer: 12, target: 'o_proj', matrix: 'A' };
  assert.deepEqual(parseLoraTensorName('base_model.model.model.layers.12.self_attn.o_proj.lora_A.weight'), want);
  assert.deepEqual(parseLoraTensorName('model.layers.12.self_attn.o_proj.lora_A.weight'), want);
  assert.deepEqual(parseLoraTensorName('base_model.model.model.layers.12.self_attn.o_proj.lora_A'), want);
  assert.deepEqual(parseLoraTensorName('base_model.model.model.layers.12.self_attn.o_proj.lora_A.default.weight'), want);
  assert.deepEqual(parseLoraTensorName('model.layers.0.mlp.down_proj.lora_B.weight'), { layer: 0, target: 'down_proj', matrix: 'B' });
  assert.equal(parseLoraTensorName('model.layers.0.mlp.q_proj.lora_B.weight'), null);
  assert.equal(parseLoraTensorName('base_model.model.lm_head.lora_A.weight'), null);
  assert.equal(parseLoraTensorName('model.layers.0.self_attn.q_proj.weight'), null);
});
