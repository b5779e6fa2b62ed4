// config.json parsing for real Llama-family configs (copied in shape from their Hugging Face repos) and the error cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelConfig } from '../../../src/engine/models/config.ts';

const llama32_1b = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009], head_dim: 64, hidden_act: 'silu', hidden_size: 2048, initializer_range: 0.02,
  intermediate_size: 8192, max_position_embeddings: 131072, mlp_bias: false, model_type: 'llama', num_attention_heads: 32,
  num_hidden_layers: 16, num_key_value_heads: 8, pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.45.0.dev0', use_cache: true, vocab_size: 128256,
};

const qwen25_05b = {
  architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645, hidden_act: 'silu',
  hidden_size: 896, initializer_range: 0.02, intermediate_size: 4864, max_position_embeddings: 32768, max_window_layers: 21,
  model_type: 'qwen2', num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6,
  rope_theta: 1000000.0, sliding_window: 32768, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.43.1',
  use_cache: true, use_sliding_window: false, vocab_size: 151936,
};

const mistral7b = {
  architectures: ['MistralForCausalLM'], bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu', hidden_size: 4096,
  initializer_range: 0.02, intermediate_size: 14336, max_position_embeddings: 32768, model_type: 'mistral',
  num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 10000.0,
  sliding_window: 4096, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.34.0.dev0', use_cache: true, vocab_size: 32000,
};

const smollm2_135m = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 0, eos_token_id: 0,
  hidden_act: 'silu', hidden_size: 576, initializer_range: 0.041666666666666664, intermediate_size: 1536, is_llama_config: true,
  max_position_embeddings: 8192, model_type: 'llama', num_attention_heads: 9, num_hidden_layers: 30, num_key_value_heads: 3,
  pretraining_tp: 1, rms_norm_eps: 1e-5, rope_interleaved: false, rope_scaling: null, rope_theta: 100000,
  tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.40.1', use_cache: true, vocab_size: 49152,
};

test('Llama 3.2: GQA, explicit head_dim, llama3 rope scaling, eos list, tied', () => {
  const c = parseModelConfig(llama32_1b);
  assert.equal(c.architecture, 'LlamaForCausalLM');
  assert.deepEqual([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize], [2048, 8192, 16, 32, 8, 64, 128256]);
  assert.deepEqual(c.ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.equal(c.ropeTheta, 500000);
  assert.equal(c.rmsNormEps, 1e-5);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.attentionBias, false);
  assert.equal(c.bosTokenId, 128000);
  assert.deepEqual(c.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(c.torchDtype, 'bfloat16');
  assert.equal(c.slidingWindow, null);
});

test('Qwen2.5: q/k/v bias implied, sliding window off, head_dim from hidden/heads', () => {
  const c = parseModelConfig(qwen25_05b);
  assert.equal(c.attentionBias, true);
  assert.equal(c.attentionOutputBias, false);
  assert.equal(c.headDim, 64);
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.slidingWindow, null);
  assert.equal(c.ropeScaling, null);
  assert.deepEqual(c.eosTokenIds, [151645]);
});

test('Mistral: untied head, sliding window kept', () => {
  const c = parseModelConfig(mistral7b);
  assert.equal(c.architecture, 'MistralForCausalLM');
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.slidingWindow, 4096);
  assert.equal(c.headDim, 128);
});

test('SmolLM2 is Llama: 9 heads / 3 kv heads', () => {
  const c = parseModelConfig(smollm2_135m);
  assert.deepEqual([c.numHeads, c.numKvHeads, c.headDim, c.ropeTheta], [9, 3, 64, 100000]);
  assert.deepEqual(c.eosTokenIds, [0]);
});

test('linear rope scaling (old `type` key) and defaults for old Llama configs', () => {
  const { num_key_value_heads: _kv, rope_theta: _rt, ...old } = mistral7b;
  const c = parseModelConfig({ ...old, architectures: ['LlamaForCausalLM'], rope_scaling: { type: 'linear', factor: 2 } });
  assert.deepEqual(c.ropeScaling, { type: 'linear', factor: 2 });
  assert.equal(c.numKvHeads, 32);
  assert.equal(c.ropeTheta, 10000);
});

test('Llama attention_bias biases q/k/v and o; Mistral ignores it as transformers does', () => {
  const llama = parseModelConfig({ ...smollm2_135m, attention_bias: true });
  assert.deepEqual([llama.attentionBias, llama.attentionOutputBias], [true, true]);
  const mistral = parseModelConfig({ ...mistral7b, attention_bias: true });
  assert.deepEqual([mistral.attentionBias, mistral.attentionOutputBias], [false, false]);
});

test('errors name the field', () => {
  const cases: [object, RegExp][] = [
    [{ ...llama32_1b, architectures: ['GPT2LMHeadModel'] }, /architectures .*GPT2LMHeadModel.* not supported/],
    [{ ...llama32_1b, architectures: undefined }, /architectures is missing/],
    [{ ...llama32_1b, hidden_size: undefined }, /hidden_size is missing/],
    [{ ...llama32_1b, vocab_size: '32000' }, /vocab_size must be a positive integer/],
    [{ ...llama32_1b, num_key_value_heads: 5 }, /num_key_value_heads/],
    [{ ...llama32_1b, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling.rope_type "yarn"/],
    [{ ...llama32_1b, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /low_freq_factor is missing/],
    [{ ...llama32_1b, rms_norm_eps: undefined }, /rms_norm_eps is missing/],
    [{ ...llama32_1b, torch_dtype: 'float8_e4m3fn' }, /torch_dtype/],
    [{ ...llama32_1b, mlp_bias: true }, /mlp_bias/],
    [{ ...llama32_1b, hidden_act: 'gelu' }, /hidden_act/],
    [{ ...llama32_1b, eos_token_id: ['</s>'] }, /eos_token_id/],
  ];
  for (const [json, re] of cases) assert.throws(() => parseModelConfig(json), re);
  assert.throws(() => parseModelConfig([]), /JSON object/);
});
