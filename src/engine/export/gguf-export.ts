// The `gguf` export: a Llama-family model (adapter folded in) as one GGUF file llama.cpp loads, or the adapter alone
// as a GGUF LoRA adapter for llama.cpp's --lora. Mapping as llama.cpp's convert_hf_to_gguf.py: architecture metadata,
// the byte-level BPE tokenizer as its `gpt2` tokenizer, llama.cpp tensor names, Q/K rows permuted for `llama`.
import { readFileSync } from 'node:fs';
import { DEFAULT_CHAT_TEMPLATE } from '../models/chat-template.ts';
import type { ModelConfig } from '../models/config.ts';
import { bool, canEncode, f32, str, u32, writeGguf, type GgufTensor, type GgufTensorType, type GgufValue } from '../models/gguf.ts';
import { EMBED_TOKENS, FINAL_NORM, LM_HEAD, LORA_TARGETS, layerParameterNames, loraModules, type LoraTarget } from '../models/parameters.ts';
import { loadTokenizer } from '../models/tokenizer.ts';
import type { Tensor } from '../models/safetensors.ts';
import { ExportRefused } from './export-refused.ts';
import type { ExportSource } from './export-source.ts';

// Dimension letters: D hidden, V vocab, NH heads, NKV kv heads, HD head dim, R LoRA rank.

export type GgufDtype = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
const TENSOR_TYPE: Record<GgufDtype, GgufTensorType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' };
/** llama.cpp's LLAMA_FTYPE values (general.file_type). */
const FILE_TYPE: Record<GgufDtype, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

/** llama.cpp's name for each projection in block N: `blk.N.<name>.weight`. */
const GGUF_PROJECTION: Record<LoraTarget, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  down_proj: 'ffn_down',
};

/** llama.cpp architecture: Llama and Mistral are `llama` (rotary on interleaved pairs, hence the Q/K permutation); Qwen2 `qwen2` (NeoX rotary, no permutation). */
function ggufArchitecture(config: ModelConfig): 'llama' | 'qwen2' {
  return config.architecture === 'Qwen2ForCausalLM' ? 'qwen2' : 'llama';
}

/**
 * HF stores q/k rows per head as [first halves | second halves] (rotate_half); llama.cpp's `llama` rotary pairs
 * neighbours. Row (h, s, j) moves to (h, j, s): reshape [heads, 2, HD/2, cols] → swap axes 1, 2. Works for a bias (cols 1).
 */
export function permuteRotaryRows(t: Tensor, heads: number): Tensor {
  const rows = t.dims[0];
  const cols = t.dims.length > 1 ? t.dims[1] : 1;
  const half = rows / heads / 2; // HD/2
  if (!Number.isInteger(half)) throw new Error(`Q/K permutation: ${rows} rows do not split into ${heads} heads of even size`);
  const out = new Float32Array(t.data.length);
  for (let h = 0; h < heads; h++) {
    for (let s = 0; s < 2; s++) {
      for (let j = 0; j < half; j++) {
        const from = (h * 2 * half + s * half + j) * cols;
        const to = (h * 2 * half + j * 2 + s) * cols;
        out.set(t.data.subarray(from, from + cols), to);
      }
    }
  }
  return { dims: t.dims, data: out };
}

/** The rotary permutation a projection's output rows need in GGUF (`llama` q and k only), or none. */
function rotaryHeads(config: ModelConfig, target: LoraTarget): number | null {
  if (ggufArchitecture(config) !== 'llama') return null;
  if (target === 'q_proj') return config.numHeads;
  if (target === 'k_proj') return config.numKvHeads;
  return null;
}

/** llama 3's rope_freqs.weight [HD/2]: the per-frequency divisors convert_hf_to_gguf derives from rope_scaling. */
function llama3RopeFactors(config: ModelConfig): Float32Array | null {
  const s = config.ropeScaling;
  if (!s || s.type !== 'llama3') return null;
  const HD = config.headDim;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  const factors = new Float32Array(HD / 2);
  for (let i = 0; i < HD / 2; i++) {
    const freq = 1 / config.ropeTheta ** ((2 * i) / HD);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) factors[i] = 1;
    else if (wavelen > lowWavelen) factors[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      factors[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return factors;
}

/** Architecture metadata under `<arch>.`, as llama.cpp reads it. The context is the one localtune serves (a sliding window caps it). */
function architectureMetadata(src: ExportSource): [string, GgufValue][] {
  const c = src.model.config;
  const arch = ggufArchitecture(c);
  const kv: [string, GgufValue][] = [
    [`${arch}.vocab_size`, u32(c.vocabSize)],
    [`${arch}.context_length`, u32(src.model.contextLength)],
    [`${arch}.embedding_length`, u32(c.hiddenSize)],
    [`${arch}.block_count`, u32(c.numLayers)],
    [`${arch}.feed_forward_length`, u32(c.intermediateSize)],
    [`${arch}.attention.head_count`, u32(c.numHeads)],
    [`${arch}.attention.head_count_kv`, u32(c.numKvHeads)],
    [`${arch}.attention.key_length`, u32(c.headDim)],
    [`${arch}.attention.value_length`, u32(c.headDim)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(c.rmsNormEps)],
    [`${arch}.rope.dimension_count`, u32(c.headDim)],
    [`${arch}.rope.freq_base`, f32(c.ropeTheta)],
  ];
  if (c.ropeScaling?.type === 'linear') kv.push([`${arch}.rope.scaling.type`, str('linear')], [`${arch}.rope.scaling.factor`, f32(c.ropeScaling.factor)]);
  if (c.slidingWindow !== null) kv.push([`${arch}.attention.sliding_window`, u32(c.slidingWindow)]);
  return kv;
}

/** Pre-tokenizer regexes of tokenizer.json Split steps, mapped to the llama.cpp pre-tokenizer that implements them. */
const PRE_TOKENIZER_BY_REGEX: Record<string, string> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": 'llama-bpe',
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": 'qwen2',
};

type Json = Record<string, any>;

/**
 * llama.cpp's `tokenizer.ggml.pre` for a byte-level tokenizer.json: a known Split regex (Llama 3, Qwen2), SmolLM's
 * digit split + GPT-2 regex, or plain GPT-2 ByteLevel. A byte-level BPE without merges (localtune's built-in model)
 * tokenizes to single bytes whatever the splitting, so `gpt-2` serves it exactly.
 */
export function ggufPreTokenizer(tokenizer: Json): string {
  const pre = tokenizer.pre_tokenizer as Json | null;
  const steps: Json[] = pre?.type === 'Sequence' ? pre.pretokenizers : pre ? [pre] : [];
  const split = steps.find((s) => s.type === 'Split');
  if (split) {
    const regex = split.pattern?.Regex as string | undefined;
    const name = regex !== undefined ? PRE_TOKENIZER_BY_REGEX[regex] : undefined;
    if (name) return name;
    throw new ExportRefused(`tokenizer.json: pre_tokenizer Split pattern ${JSON.stringify(split.pattern)} has no llama.cpp equivalent known to localtune`, 'model');
  }
  const byteLevel = steps.find((s) => s.type === 'ByteLevel');
  const digits = steps.find((s) => s.type === 'Digits');
  if (byteLevel && digits?.individual_digits && steps.length === 2) return 'smollm';
  if (byteLevel && steps.length === 1) return 'gpt-2';
  throw new ExportRefused(`tokenizer.json: pre_tokenizer ${JSON.stringify(steps.map((s) => s.type))} has no llama.cpp equivalent known to localtune`, 'model');
}

/** llama.cpp token types. */
const TokenType = { NORMAL: 1, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5 } as const;

/** The tokenizer as llama.cpp's `gpt2` BPE: every id's text (byte-level symbols), its type, the merges, special ids, chat template. */
function tokenizerMetadata(src: ExportSource): [string, GgufValue][] {
  const dir = src.model.dir;
  const json = JSON.parse(readFileSync(src.model.tokenizerPath, 'utf8')) as Json;
  const model = json.model as Json;
  const byteLevel = JSON.stringify(json.decoder ?? null).includes('"ByteLevel"');
  if (model?.type !== 'BPE' || !byteLevel) {
    throw new ExportRefused(`${dir}: tokenizer.json is not a byte-level BPE tokenizer (model ${JSON.stringify(model?.type)}, decoder ${JSON.stringify(json.decoder?.type)}); GGUF export supports byte-level BPE (Llama 3, Qwen2, SmolLM, the built-in model)`, 'model');
  }
  const V = src.model.config.vocabSize;
  const tokens: string[] = Array.from({ length: V }, (_, i) => `[PAD${i}]`);
  const types = new Int32Array(V).fill(TokenType.UNUSED);
  const place = (text: string, id: number, type: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new ExportRefused(`${dir}: tokenizer.json token ${JSON.stringify(text)} has id ${id}, outside the model's vocabulary (${V})`, 'model');
    tokens[id] = text;
    types[id] = type;
  };
  for (const [text, id] of Object.entries(model.vocab as Record<string, number>)) place(text, id, TokenType.NORMAL);
  for (const t of (json.added_tokens ?? []) as Json[]) place(t.content, t.id, t.special ? TokenType.CONTROL : TokenType.USER_DEFINED);
  const merges = ((model.merges ?? []) as (string | [string, string])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m));

  const tok = loadTokenizer(dir);
  const ids = new Map(tokens.map((t, id) => [t, id]));
  const bos = (tok.bosToken !== null ? ids.get(tok.bosToken) : undefined) ?? src.model.config.bosTokenId ?? undefined;
  const eos = tok.eosTokenIds[0] ?? src.model.config.eosTokenIds[0];
  const tokenizerConfig = src.model.tokenizerConfigPath ? (JSON.parse(readFileSync(src.model.tokenizerConfigPath, 'utf8')) as Json) : {};
  // transformers adds BOS when tokenizer_config says so, or (Llama 3) when the post-processor's template starts with it.
  const template = json.post_processor?.type === 'TemplateProcessing' ? json.post_processor.single?.[0]?.SpecialToken?.id : undefined;
  const addBos = typeof tokenizerConfig.add_bos_token === 'boolean' ? tokenizerConfig.add_bos_token : template !== undefined && template === tok.bosToken;

  const kv: [string, GgufValue][] = [
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str(ggufPreTokenizer(json))],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
    ['tokenizer.ggml.merges', { type: 'string[]', value: merges }],
  ];
  if (bos !== undefined) kv.push(['tokenizer.ggml.bos_token_id', u32(bos)]);
  if (eos !== undefined) kv.push(['tokenizer.ggml.eos_token_id', u32(eos)]);
  if (tok.padTokenId !== null) kv.push(['tokenizer.ggml.padding_token_id', u32(tok.padTokenId)]);
  kv.push(['tokenizer.ggml.add_bos_token', bool(addBos)], ['tokenizer.ggml.add_eos_token', bool(false)]);
  // The template localtune serves with: the model's own, else the ChatML default.
  kv.push(['tokenizer.chat_template', str(tok.chatTemplate ?? DEFAULT_CHAT_TEMPLATE)]);
  return kv;
}

/**
 * The tensor type for a weight: 1-D tensors (norms, biases) stay F32 as in llama.cpp; in a Q4_0 file the embedding and
 * output projection, which the logits depend on most, are Q8_0 (as llama-quantize keeps them at higher precision);
 * block types fall back to F16 on rows that are not whole blocks.
 */
function tensorType(dtype: GgufDtype, dims: readonly number[], role: 'embedding' | 'other' = 'other'): GgufTensorType {
  if (dims.length === 1) return 'F32';
  const type = dtype === 'q4_0' && role === 'embedding' ? 'Q8_0' : TENSOR_TYPE[dtype];
  return canEncode(type, dims) ? type : 'F16';
}

/** Writes the whole model (adapter folded in) as a GGUF file. */
export function writeGgufModel(src: ExportSource, file: string, dtype: GgufDtype, name: string): void {
  const c = src.model.config;
  const arch = ggufArchitecture(c);
  const metadata = new Map<string, GgufValue>([
    ['general.architecture', str(arch)],
    ['general.type', str('model')],
    ['general.name', str(name)],
    ['general.file_type', u32(FILE_TYPE[dtype])],
    ['general.quantization_version', u32(2)],
    ...architectureMetadata(src),
    ...tokenizerMetadata(src),
  ]);
  const tensors: GgufTensor[] = [];
  const add = (ggufName: string, hfName: string, dims: number[], transform: (t: Tensor) => Tensor = (t) => t) => {
    const role = hfName === EMBED_TOKENS || hfName === LM_HEAD ? 'embedding' : 'other';
    tensors.push({ name: ggufName, dims, type: tensorType(dtype, dims, role), data: () => transform(src.tensor(hfName)).data });
  };
  const D = c.hiddenSize;
  add('token_embd.weight', EMBED_TOKENS, [c.vocabSize, D]);
  const ropeFactors = llama3RopeFactors(c);
  if (ropeFactors) tensors.push({ name: 'rope_freqs.weight', dims: [ropeFactors.length], type: 'F32', data: () => ropeFactors });
  for (let i = 0; i < c.numLayers; i++) {
    const names = layerParameterNames(c, i);
    add(`blk.${i}.attn_norm.weight`, names.inputNorm, [D]);
    for (const t of LORA_TARGETS) {
      const heads = rotaryHeads(c, t);
      const permute = heads === null ? undefined : (x: Tensor) => permuteRotaryRows(x, heads);
      const spec = src.model.tensors.get(names.weight[t])!;
      add(`blk.${i}.${GGUF_PROJECTION[t]}.weight`, names.weight[t], spec.dims, permute);
      const bias = names.bias[t];
      if (bias) add(`blk.${i}.${GGUF_PROJECTION[t]}.bias`, bias, [spec.dims[0]], permute);
    }
    add(`blk.${i}.ffn_norm.weight`, names.postAttentionNorm, [D]);
  }
  add('output_norm.weight', FINAL_NORM, [D]);
  // Tied embeddings: llama.cpp reads the output projection from token_embd when output.weight is absent.
  if (!c.tieWordEmbeddings) add('output.weight', LM_HEAD, [c.vocabSize, D]);
  writeGguf(file, metadata, tensors);
}

/** Writes the adapter alone as a GGUF LoRA adapter (`--lora` on a GGUF of the same base): `blk.N.attn_q.weight.lora_a` [R, in] and `.lora_b` [out, R]. */
export function writeGgufAdapter(src: ExportSource, file: string, dtype: GgufDtype, name: string): void {
  if (!src.adapter) throw new ExportRefused('a GGUF LoRA adapter needs a fine-tuned model, not a base model', 'format');
  const c = src.model.config;
  const { config: lora, tensors: adapter } = src.adapter;
  const metadata = new Map<string, GgufValue>([
    ['general.architecture', str(ggufArchitecture(c))],
    ['general.type', str('adapter')],
    ['general.name', str(name)],
    ['general.file_type', u32(FILE_TYPE[dtype])],
    ['general.quantization_version', u32(2)],
    ['adapter.type', str('lora')],
    ['adapter.lora.alpha', f32(lora.alpha)],
  ]);
  const tensors: GgufTensor[] = [];
  for (const m of loraModules(c, lora.targetModules)) {
    const a = adapter.get(m.loraA)!; // [R, in]
    const b = adapter.get(m.loraB)!; // [out, R]
    const heads = rotaryHeads(c, m.target);
    // The permutation reorders W's rows, which are B's rows: W' = P·B·A.
    const bRows = heads === null ? b : permuteRotaryRows(b, heads);
    const base = `blk.${m.layer}.${GGUF_PROJECTION[m.target]}.weight`;
    tensors.push({ name: `${base}.lora_a`, dims: a.dims, type: tensorType(dtype, a.dims), data: () => a.data });
    tensors.push({ name: `${base}.lora_b`, dims: b.dims, type: tensorType(dtype, b.dims), data: () => bRows.data });
  }
  writeGguf(file, metadata, tensors);
}
