// Tiny seeded Llama-family models, LoRA tensors and batches for the engine tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig, type ModelConfig } from '../../src/engine/models/config.ts';
import { baseParameters } from '../../src/engine/models/parameters.ts';
import { writeSafetensors } from '../../src/engine/models/safetensors.ts';
import type { FloatDType, TypedData } from '../../src/engine/onnx/graph.ts';
import type { TrainBatch } from '../../src/engine/train/batch.ts';
import { rng } from './onnx/gradcheck.ts';

/** A 2-layer model, GQA 4/2, head dim 4, vocab 11; `over` patches the config.json fields. */
/** The shape of the tests' tiny Qwen2 (q/k/v bias, tied embeddings) with Qwen's real 151,936-id vocabulary. */
export const TINY_QWEN2_SHAPE: Record<string, unknown> = {
  architectures: ['Qwen2ForCausalLM'],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 151_936,
  rms_norm_eps: 1e-6,
  rope_theta: 1_000_000,
  tie_word_embeddings: true,
};

export function tinyConfig(over: Record<string, unknown> = {}): ModelConfig {
  return parseModelConfig({ ...TINY_CONFIG_JSON, ...over });
}

export function randomWeights(config: ModelConfig, seed: number, dtype: FloatDType = 'float64'): Map<string, { dims: number[]; data: TypedData }> {
  const rand = rng(seed);
  const out = new Map<string, { dims: number[]; data: TypedData }>();
  for (const p of baseParameters(config)) {
    const n = p.dims.reduce((a, b) => a * b, 1);
    const isNorm = p.dims.length === 1 && p.name.endsWith('norm.weight');
    const values = Array.from({ length: n }, () => (isNorm ? 0.8 + 0.4 * rand() : (rand() * 2 - 1) * 0.5));
    out.set(p.name, { dims: p.dims, data: dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values) });
  }
  return out;
}

/** Random values for tensors of the given dims (LoRA A and B), scale `s`. */
export function randomTensors(specs: { name: string; dims: number[] }[], seed: number, s: number): Map<string, Float64Array> {
  const rand = rng(seed);
  return new Map(specs.map((p) => [p.name, Float64Array.from({ length: p.dims.reduce((a, b) => a * b, 1) }, () => (rand() * 2 - 1) * s)]));
}

/** A right-padded batch: row b has lengths[b] real tokens; the second half of each row's predictions is trained. */
export function randomBatch(vocab: number, T: number, lengths: number[], seed: number): TrainBatch {
  const rand = rng(seed);
  const B = lengths.length;
  const inputIds = new Int32Array(B * T);
  const labels = new Int32Array(B * T);
  const lossWeights = new Float32Array(B * T);
  const attentionMask = new Float32Array(B * T);
  lengths.forEach((len, b) => {
    for (let t = 0; t < len; t++) {
      inputIds[b * T + t] = Math.floor(rand() * vocab);
      attentionMask[b * T + t] = 1;
    }
    for (let t = Math.floor(len / 2); t < len - 1; t++) {
      labels[b * T + t] = inputIds[b * T + t + 1];
      lossWeights[b * T + t] = 1;
    }
  });
  return { rows: B, seqLen: T, inputIds, labels, lossWeights, attentionMask };
}

/** Writes config.json + model.safetensors (float32) of a seeded random model into `dir`. */
export function writeTinyModelDir(dir: string, configJson: Record<string, unknown>, seed: number): ModelConfig {
  const config = parseModelConfig(configJson);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson));
  const tensors = new Map([...randomWeights(config, seed, 'float32')].map(([k, v]) => [k, { dims: v.dims, data: v.data as Float32Array }]));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return config;
}

export const TINY_CONFIG_JSON: Record<string, unknown> = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 11,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 64,
  tie_word_embeddings: false,
};
