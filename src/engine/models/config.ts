// Parses a Hugging Face Llama-family config.json (Llama, Mistral, Qwen2, SmolLM) into the one ModelConfig the engine uses.

/** RoPE frequency scaling as the HF configs spell it (`rope_scaling`). */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export type ModelArchitecture = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM';

export const SUPPORTED_ARCHITECTURES: readonly ModelArchitecture[] = [
  'LlamaForCausalLM',
  'MistralForCausalLM',
  'Qwen2ForCausalLM',
];

export interface ModelConfig {
  architecture: ModelArchitecture;
  hiddenSize: number; // D
  intermediateSize: number; // F (MLP width)
  numLayers: number; // L
  numHeads: number; // NH
  numKvHeads: number; // NKV (GQA: NH % NKV === 0)
  headDim: number; // HD (explicit head_dim, else D / NH)
  vocabSize: number; // V
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias: Qwen2 always, Llama when `attention_bias`, Mistral never (as in transformers). */
  attentionBias: boolean;
  /** o_proj carries a bias: only Llama with `attention_bias` (Qwen2 biases q/k/v only). */
  attentionOutputBias: boolean;
  /** Mistral-style sliding-window attention span, or null for full causal attention. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  torchDtype: 'float32' | 'float16' | 'bfloat16' | null;
}

type Json = Record<string, unknown>;

function fail(field: string, why: string): never {
  throw new Error(`config.json: ${field} ${why}`);
}

function positiveInt(c: Json, field: string, fallback?: number): number {
  const v = c[field] ?? fallback;
  if (v === undefined || v === null) fail(field, 'is missing');
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(field, `must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function positiveNumber(c: Json, field: string, fallback?: number): number {
  const v = c[field] ?? fallback;
  if (v === undefined || v === null) fail(field, 'is missing');
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(field, `must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function bool(c: Json, field: string, fallback: boolean): boolean {
  const v = c[field] ?? fallback;
  if (typeof v !== 'boolean') fail(field, `must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function tokenIds(v: unknown, field: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) fail(field, `must be a token id or a list of them, got ${JSON.stringify(v)}`);
  }
  return list as number[];
}

function architectureOf(c: Json): ModelArchitecture {
  const archs = c.architectures;
  if (!Array.isArray(archs) || archs.length === 0) fail('architectures', 'is missing');
  const arch = archs[0];
  if (!SUPPORTED_ARCHITECTURES.includes(arch)) {
    fail('architectures', `${JSON.stringify(arch)} is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  }
  return arch as ModelArchitecture;
}

function ropeScalingOf(c: Json): RopeScaling | null {
  const rs = c.rope_scaling;
  if (rs === undefined || rs === null) return null;
  if (typeof rs !== 'object' || Array.isArray(rs)) fail('rope_scaling', 'must be an object or null');
  const s = rs as Json;
  // HF renamed `type` to `rope_type`; both appear in the wild.
  const kind = s.rope_type ?? s.type;
  if (kind === 'default') return null;
  if (kind === 'linear') return { type: 'linear', factor: positiveNumber(s, 'factor') };
  if (kind === 'llama3') {
    return {
      type: 'llama3',
      factor: positiveNumber(s, 'factor'),
      lowFreqFactor: positiveNumber(s, 'low_freq_factor'),
      highFreqFactor: positiveNumber(s, 'high_freq_factor'),
      originalMaxPositionEmbeddings: positiveInt(s, 'original_max_position_embeddings'),
    };
  }
  fail('rope_scaling.rope_type', `${JSON.stringify(kind)} is not supported (supported: linear, llama3)`);
}

function slidingWindowOf(c: Json): number | null {
  // Qwen2 configs carry a sliding_window value but switch it off with use_sliding_window: false.
  if (c.sliding_window === undefined || c.sliding_window === null || c.use_sliding_window === false) return null;
  return positiveInt(c, 'sliding_window');
}

function dtypeOf(c: Json): ModelConfig['torchDtype'] {
  const v = c.torch_dtype ?? c.dtype;
  if (v === undefined || v === null) return null;
  if (v === 'float32' || v === 'float16' || v === 'bfloat16') return v;
  fail('torch_dtype', `${JSON.stringify(v)} is not supported (float32, float16, bfloat16)`);
}

/** Reads a parsed config.json. Throws an Error naming the field on anything unsupported or missing. */
export function parseModelConfig(json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('config.json: must be a JSON object');
  const c = json as Json;
  const architecture = architectureOf(c);
  const hiddenSize = positiveInt(c, 'hidden_size');
  const numHeads = positiveInt(c, 'num_attention_heads');
  // Older Llama configs omit num_key_value_heads: that means plain multi-head attention.
  const numKvHeads = positiveInt(c, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) fail('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  if (c.head_dim === undefined || c.head_dim === null) {
    if (hiddenSize % numHeads !== 0) fail('head_dim', `is missing and hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads})`);
  }
  const headDim = positiveInt(c, 'head_dim', hiddenSize / numHeads);
  const llamaBias = architecture === 'LlamaForCausalLM' && bool(c, 'attention_bias', false);
  if (headDim % 2 !== 0) fail('head_dim', `(${headDim}) must be even for rotary embeddings`);
  if (c.mlp_bias === true) fail('mlp_bias', 'true is not supported (MLP projections without bias only)');
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') fail('hidden_act', `${JSON.stringify(c.hidden_act)} is not supported (silu)`);
  return {
    architecture,
    hiddenSize,
    intermediateSize: positiveInt(c, 'intermediate_size'),
    numLayers: positiveInt(c, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(c, 'vocab_size'),
    rmsNormEps: positiveNumber(c, 'rms_norm_eps'),
    ropeTheta: positiveNumber(c, 'rope_theta', 10000),
    ropeScaling: ropeScalingOf(c),
    maxPositionEmbeddings: positiveInt(c, 'max_position_embeddings'),
    tieWordEmbeddings: bool(c, 'tie_word_embeddings', false),
    // Qwen2 has q/k/v bias by construction (no config field); Llama's attention_bias covers q/k/v and o.
    attentionBias: architecture === 'Qwen2ForCausalLM' || llamaBias,
    attentionOutputBias: llamaBias,
    slidingWindow: slidingWindowOf(c),
    bosTokenId: tokenIds(c.bos_token_id, 'bos_token_id')[0] ?? null,
    eosTokenIds: tokenIds(c.eos_token_id, 'eos_token_id'),
    torchDtype: dtypeOf(c),
  };
}
