// A base model's tokenizer: tokenizer.json run by @huggingface/tokenizers, plus the special tokens of tokenizer_config.json and its chat template (or chat_template.jinja's).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { bytesToUnicode } from './default-model.ts';

/** tokenizer_config.json writes a special token either as its text or as an AddedToken object. */
type TokenSpec = string | { content: string } | null | undefined;

export interface TokenizerConfig {
  chat_template?: string | { name: string; template: string }[];
  bos_token?: TokenSpec;
  eos_token?: TokenSpec;
  pad_token?: TokenSpec;
  [key: string]: unknown;
}

export interface ModelTokenizer {
  /** Token ids of `text` exactly as written: no BOS/EOS added (chat templates write their own). */
  encode(text: string): number[];
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string;
  bosToken: string | null;
  eosToken: string | null;
  padTokenId: number | null;
  /** Every id that ends a turn: the config's eos token plus generation_config.json's eos_token_id list. */
  eosTokenIds: number[];
  /** chat_template.jinja, else tokenizer_config.json's template (the one named "default" when several); null when the model has none. */
  chatTemplate: string | null;
  vocabSize: number;
  /**
   * For byte-level BPE tokenizers: how many UTF-8 bytes of the text each id stands for (so token offsets are prefix
   * sums), valid for texts the normalizer leaves unchanged (see `leavesUnchanged`). Null for other tokenizers.
   */
  tokenUtf8Lengths: Int32Array | null;
  /** Whether the normalizer leaves `text` as it is (always true without one). */
  leavesUnchanged(text: string): boolean;
  /** Every id's token as the model spells it (built on first call), for grammar-constrained decoding. */
  vocabulary(): TokenVocabulary;
}

export interface TokenVocabulary {
  /** Token strings by id as tokenizer.json stores them (byte-level symbols, ▁ pieces, <0x0A>…); '' for an unused id. */
  tokens: string[];
  /** Ids of special added tokens (decoding skips them). */
  special: Set<number>;
  /** How `tokens` spell text: GPT-2 byte-level symbols, SentencePiece pieces with <0xNN> byte fallback, or plain text. */
  encoding: 'byte_level' | 'byte_fallback' | 'raw';
  /** SentencePiece models that put a ▁ before the text. */
  prependsSpace: boolean;
}

/**
 * Loads `tokenizer.json`, `tokenizer_config.json` and (when present) `generation_config.json` from a model directory.
 * A `chat_template.jinja` beside them wins over the config's chat_template, as in transformers (which saves templates there).
 */
export function loadTokenizer(modelDir: string): ModelTokenizer {
  const json = JSON.parse(readFileSync(join(modelDir, 'tokenizer.json'), 'utf8')) as object;
  const configPath = join(modelDir, 'tokenizer_config.json');
  const templatePath = join(modelDir, 'chat_template.jinja');
  const config = {
    ...(existsSync(configPath) ? (JSON.parse(readFileSync(configPath, 'utf8')) as TokenizerConfig) : {}),
    ...(existsSync(templatePath) ? { chat_template: readFileSync(templatePath, 'utf8') } : {}),
  };
  const generationPath = join(modelDir, 'generation_config.json');
  const generation = existsSync(generationPath)
    ? (JSON.parse(readFileSync(generationPath, 'utf8')) as { eos_token_id?: number | number[] })
    : {};
  return createTokenizer(json, config, generation.eos_token_id);
}

/** Builds a tokenizer from already-parsed files (tests build small ones in code). */
export function createTokenizer(tokenizerJson: object, config: TokenizerConfig, generationEosIds?: number | number[]): ModelTokenizer {
  const tokenizer = new Tokenizer(tokenizerJson, config);
  const bosToken = tokenText(config.bos_token);
  const eosToken = tokenText(config.eos_token);
  const padToken = tokenText(config.pad_token);
  // Off unless the config asks for it (transformers' default since 4.45): it rewrites " ," to "," and breaks round trips.
  const cleanUpSpaces = config.clean_up_tokenization_spaces === true;
  const eosTokenIds = new Set<number>([generationEosIds ?? []].flat());
  const eosId = eosToken === null ? undefined : tokenizer.token_to_id(eosToken);
  if (eosId !== undefined) eosTokenIds.add(eosId);
  let vocabulary: TokenVocabulary | undefined;
  return {
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    decode: (ids, options) =>
      ids.length === 0
        ? ''
        : tokenizer.decode(Array.from(ids), { skip_special_tokens: options?.skipSpecialTokens ?? false, clean_up_tokenization_spaces: cleanUpSpaces }),
    bosToken,
    eosToken,
    padTokenId: padToken === null ? null : (tokenizer.token_to_id(padToken) ?? null),
    eosTokenIds: [...eosTokenIds],
    chatTemplate: pickChatTemplate(config.chat_template),
    vocabSize: tokenizer.get_vocab(true).size,
    tokenUtf8Lengths: byteLevelLengths(tokenizerJson as TokenizerJson, tokenizer.get_vocab(true)),
    leavesUnchanged: normalizerCheck((tokenizerJson as TokenizerJson).normalizer),
    vocabulary: () => (vocabulary ??= tokenVocabulary(tokenizerJson as TokenizerJson, tokenizer.get_vocab(true))),
  };
}

/** One step of a normalizer, pre-tokenizer or decoder (a Sequence lists its steps). */
interface Step {
  type: string;
  normalizers?: Step[];
  pretokenizers?: Step[];
  decoders?: Step[];
  prepend?: string;
  prepend_scheme?: string;
  add_prefix_space?: boolean;
}

interface TokenizerJson {
  normalizer?: Step | null;
  pre_tokenizer?: Step | null;
  decoder?: Step | null;
  model?: { type: string; byte_fallback?: boolean };
  added_tokens?: { id: number; content: string; special?: boolean }[];
}

/** A step and, for Sequences, the steps inside it. */
const stepsOf = (step: Step | null | undefined): Step[] =>
  step ? [step, ...(step.normalizers ?? step.pretokenizers ?? step.decoders ?? []).flatMap(stepsOf)] : [];

/** What xgrammar's TokenizerInfo needs, read as its Hugging Face loader reads it: decoder type, byte fallback, ▁ prefix. */
function tokenVocabulary(json: TokenizerJson, vocab: Map<string, number>): TokenVocabulary {
  let size = 0;
  for (const id of vocab.values()) size = Math.max(size, id + 1);
  const tokens = new Array<string>(size).fill('');
  for (const [token, id] of vocab) tokens[id] = token;
  const special = new Set((json.added_tokens ?? []).filter((t) => t.special).map((t) => t.id));
  const decoders = stepsOf(json.decoder).map((s) => s.type);
  const encoding = decoders.includes('ByteLevel') ? 'byte_level' : decoders.includes('ByteFallback') || json.model?.byte_fallback ? 'byte_fallback' : 'raw';
  if (encoding === 'byte_level') {
    // Added tokens are stored as their text, not in byte-level symbols: spell them as the model's own tokens are.
    const symbols = bytesToUnicode();
    for (const added of json.added_tokens ?? []) tokens[added.id] = [...Buffer.from(added.content, 'utf8')].map((b) => symbols[b]).join('');
  }
  const prependsSpace =
    stepsOf(json.normalizer).some((s) => s.type === 'Prepend' && s.prepend === '▁') ||
    stepsOf(json.pre_tokenizer).some((s) => s.type === 'Metaspace' && (s.prepend_scheme ? s.prepend_scheme !== 'never' : s.add_prefix_space !== false));
  return { tokens, special, encoding, prependsSpace };
}

/**
 * In a byte-level BPE vocabulary every character of a token string is one byte (GPT-2's byte → character table),
 * so a token's UTF-8 length is its string length; an added token stands for its own content.
 */
function byteLevelLengths(json: TokenizerJson, vocab: Map<string, number>): Int32Array | null {
  const pre = json.pre_tokenizer;
  const byteLevel = pre?.type === 'ByteLevel' || (pre?.type === 'Sequence' && pre.pretokenizers?.some((p) => p.type === 'ByteLevel'));
  if (!byteLevel || json.model?.type !== 'BPE') return null;
  let size = 0;
  for (const id of vocab.values()) size = Math.max(size, id + 1);
  const lengths = new Int32Array(size);
  for (const [token, id] of vocab) lengths[id] = token.length;
  for (const added of json.added_tokens ?? []) lengths[added.id] = Buffer.byteLength(added.content);
  return lengths;
}

/** Texts a tokenizer's normalizer provably leaves alone: any without one, NFC-stable ones for NFC; none otherwise. */
function normalizerCheck(normalizer: TokenizerJson['normalizer']): (text: string) => boolean {
  if (!normalizer) return () => true;
  if (normalizer.type === 'NFC') return (text) => text.normalize('NFC') === text;
  return () => false;
}

function tokenText(spec: TokenSpec): string | null {
  if (spec === null || spec === undefined) return null;
  return typeof spec === 'string' ? spec : spec.content;
}

function pickChatTemplate(template: TokenizerConfig['chat_template']): string | null {
  if (template === undefined) return null;
  if (typeof template === 'string') return template;
  return (template.find((t) => t.name === 'default') ?? template[0])?.template ?? null;
}
