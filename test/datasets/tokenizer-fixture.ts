// Small tokenizers built in code for tests: byte-level BPE over the 256 byte symbols, a few merges, and special tokens.
import { createTokenizer, type ModelTokenizer } from '../../src/engine/models/tokenizer.ts';

/** GPT-2's byte → printable character table, as the ByteLevel pre-tokenizer and decoder use it. */
function byteSymbols(): string[] {
  const direct: number[] = [];
  for (let b = 33; b <= 126; b++) direct.push(b);
  for (let b = 161; b <= 172; b++) direct.push(b);
  for (let b = 174; b <= 255; b++) direct.push(b);
  const symbols: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) symbols[b] = direct.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  return symbols;
}

/** tokenizer.json text for byte-level BPE: ids 0..255 are bytes, then `merges` (pairs of ASCII strings), then `specials`. */
export function byteLevelTokenizerJson(specials: string[], merges: [string, string][] = []): object {
  const symbols = byteSymbols();
  const vocab: Record<string, number> = {};
  symbols.forEach((s, b) => (vocab[s] = b));
  const enc = (s: string) => [...Buffer.from(s, 'utf8')].map((b) => symbols[b]).join('');
  for (const [a, b] of merges) vocab[enc(a + b)] = Object.keys(vocab).length;
  const base = Object.keys(vocab).length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, i) => ({
      id: base + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: merges.map(([a, b]) => `${enc(a)} ${enc(b)}`),
    },
  };
}

export const CHATML_SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
export const LLAMA3_SPECIALS = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'];

/** A ChatML tokenizer without a chat template of its own (so it gets the default), eos `<|im_end|>`. */
export function chatmlTokenizer(merges: [string, string][] = []): ModelTokenizer {
  return createTokenizer(byteLevelTokenizerJson(CHATML_SPECIALS, merges), { eos_token: '<|im_end|>', pad_token: '<|endoftext|>' });
}

/** Llama-3's chat template, as shipped in Meta-Llama-3-8B-Instruct's tokenizer_config.json. */
export const LLAMA3_TEMPLATE =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** A Llama-3-style tokenizer: bos `<|begin_of_text|>`, eos `<|end_of_text|>`, turns ended by `<|eot_id|>` (a generation eos id). */
export function llama3Tokenizer(): ModelTokenizer {
  const merges: [string, string][] = [['H', 'i'], ['t', 'he']];
  const specialId = (token: string) => 256 + merges.length + LLAMA3_SPECIALS.indexOf(token);
  return createTokenizer(
    byteLevelTokenizerJson(LLAMA3_SPECIALS, merges),
    { bos_token: '<|begin_of_text|>', eos_token: '<|end_of_text|>', chat_template: LLAMA3_TEMPLATE },
    [specialId('<|end_of_text|>'), specialId('<|eot_id|>')],
  );
}
