// The built-in default model: a small Llama-architecture model with random weights and a byte-level ChatML tokenizer,
// written in Hugging Face layout deterministically from a seed. It lets the whole pipeline run anywhere in minutes;
// it knows nothing until fine-tuned.
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeTextAtomically } from '../atomic-file.ts';
import { createRng, fillNormal } from '../random.ts';
import { parseModelConfig } from './config.ts';
import { EMBED_TOKENS, baseParameters } from './parameters.ts';
import { writeSafetensors, type TensorToWrite } from './safetensors.ts';

export const DEFAULT_MODEL_ID = 'localtune-default';
export const DEFAULT_MODEL_SEED = 42;

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;
const ENDOFTEXT_ID = 256;
const IM_END_ID = 258;
/** 256 bytes + 3 specials, padded to a multiple of 64 (MatMul-friendly; the padding ids are never produced). */
const VOCAB_SIZE = 320;

/** config.json of the default model (Llama architecture, GQA 8/4, tied embeddings). */
export function defaultModelConfigJson(): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 256,
    intermediate_size: 704,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    head_dim: 32,
    hidden_act: 'silu',
    vocab_size: VOCAB_SIZE,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    rope_scaling: null,
    tie_word_embeddings: true,
    attention_bias: false,
    mlp_bias: false,
    initializer_range: 0.02,
    bos_token_id: ENDOFTEXT_ID,
    eos_token_id: IM_END_ID,
    pad_token_id: ENDOFTEXT_ID,
    torch_dtype: 'float32',
  };
}

/** GPT-2's byte -> printable-character map, which ByteLevel pre-tokenizers and decoders use. */
export function bytesToUnicode(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) chars.push(String.fromCodePoint(printable(b) ? b : next++));
  return chars;
}

/** tokenizer.json: ByteLevel pre-tokenizer/decoder, BPE over the 256 byte symbols (id = byte value, no merges), ChatML specials. */
export function defaultTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bytesToUnicode().forEach((ch, b) => (vocab[ch] = b));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, i) => ({
      id: ENDOFTEXT_ID + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [],
    },
  };
}

/**
 * ChatML (as Qwen2.5 writes it): system/user/assistant/tool turns, OpenAI-style `tool_calls` on assistant turns
 * (arguments as a JSON string or an object), content as a string or a list of text parts, a tools block in the
 * system turn when `tools` is given, and `add_generation_prompt`.
 */
export const CHATML_TEMPLATE = `{%- macro content_text(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content -%}{%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if messages[0].role == 'system' -%}{{- content_text(messages[0].content) + '\\n\\n' -}}{%- endif -%}
{{- '# Tools\\n\\nYou may call one or more functions. Function signatures are within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if not (loop.first and tools and message.role == 'system') -%}
{{- '<|im_start|>' + message.role + '\\n' + content_text(message.content) -}}
{%- if message.role == 'assistant' and message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- set fn = call.function if call.function else call -%}
{%- if (loop.first and content_text(message.content)) or not loop.first -%}{{- '\\n' -}}{%- endif -%}
{{- '<tool_call>\\n{"name": "' + fn.name + '", "arguments": ' -}}
{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}`;

export function defaultTokenizerConfigJson(): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  SPECIAL_TOKENS.forEach((content, i) => {
    decoder[String(ENDOFTEXT_ID + i)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  });
  return {
    add_bos_token: false,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    unk_token: null,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: 2048,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}

export function defaultGenerationConfigJson(): Record<string, unknown> {
  return { bos_token_id: ENDOFTEXT_ID, eos_token_id: [IM_END_ID, ENDOFTEXT_ID], pad_token_id: ENDOFTEXT_ID };
}

/**
 * Seeded random weights: Linear weights N(0, 0.02) as HF initialises Llama, RMSNorm weights 1. The tied embedding
 * is N(0, 0.1) instead: with rms-normalised hidden states a logit is at most hidden·std (5 at 0.02, which caps the
 * top probability near 0.3 over 320 tokens), so 0.1 lets a fine-tune drive the loss near zero.
 */
export function defaultModelWeights(seed: number): Map<string, TensorToWrite> {
  const config = parseModelConfig(defaultModelConfigJson());
  const rng = createRng(seed);
  const weights = new Map<string, TensorToWrite>();
  for (const spec of baseParameters(config)) {
    const data = new Float32Array(spec.dims.reduce((a, b) => a * b, 1));
    if (spec.dims.length === 1) data.fill(1); // RMSNorm weight
    else fillNormal(rng, data, 0, spec.name === EMBED_TOKENS ? 0.1 : 0.02);
    weights.set(spec.name, { dims: spec.dims, data });
  }
  return weights;
}

function writeJson(file: string, value: unknown): void {
  writeTextAtomically(file, JSON.stringify(value, null, 2) + '\n');
}

/** Writes the default model's files into `dir` (created if needed). Same seed ⇒ byte-identical files. */
export function writeDefaultModel(dir: string, seed: number = DEFAULT_MODEL_SEED): void {
  mkdirSync(dir, { recursive: true });
  writeJson(join(dir, 'config.json'), defaultModelConfigJson());
  writeJson(join(dir, 'generation_config.json'), defaultGenerationConfigJson());
  writeJson(join(dir, 'tokenizer.json'), defaultTokenizerJson());
  writeJson(join(dir, 'tokenizer_config.json'), defaultTokenizerConfigJson());
  writeSafetensors(join(dir, 'model.safetensors'), defaultModelWeights(seed), { format: 'pt' });
}

/**
 * Creates `<modelsDir>/localtune-default` when absent (built in a hidden temp folder, then renamed, so a crash
 * never leaves half a model) and returns its path.
 */
export function ensureDefaultModel(modelsDir: string, seed: number = DEFAULT_MODEL_SEED): string {
  const dir = join(modelsDir, DEFAULT_MODEL_ID);
  if (existsSync(dir)) return dir;
  const tmp = join(modelsDir, `.${DEFAULT_MODEL_ID}.${process.pid}.tmp`);
  rmSync(tmp, { recursive: true, force: true });
  writeDefaultModel(tmp, seed);
  try {
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    if (!existsSync(dir)) throw err; // another process created it first: theirs is identical
  }
  return dir;
}
