// Training examples → token ids with a per-token loss weight, the trained spans found by rendering the model's own chat template.
import type { ModelTokenizer } from '../engine/models/tokenizer.ts';
import { compileChatTemplate, toTemplateMessages, type ChatTemplate, type TemplateMessage } from '../engine/models/chat-template.ts';

/** Token ids and, per token, 1 when the trainer learns to predict it, 0 otherwise. */
export interface TokenizedExample {
  ids: Int32Array;
  weights: Uint8Array;
}

/** A preference example: the shared prompt, and each completion with weights on its trained tokens. */
export interface TokenizedPreference {
  promptIds: Int32Array;
  chosen: TokenizedExample;
  rejected: TokenizedExample;
}

export interface ChatTokenizer {
  tokenizer: ModelTokenizer;
  template: ChatTemplate;
}

/** Pairs a tokenizer with its model's chat template (or the ChatML default when it has none). */
export function createChatTokenizer(tokenizer: ModelTokenizer, template?: ChatTemplate): ChatTokenizer {
  return { tokenizer, template: template ?? compileChatTemplate(tokenizer.chatTemplate, tokenizer) };
}

type Message = Record<string, any>;
type Span = [start: number, end: number];

// Stands in for an assistant message's content to learn what the template writes after it (the end of turn).
const SENTINEL = 'q7Zx3sentinelK9w';

/**
 * A chat line → ids and weights. Weight 1 falls exactly on the tokens of each assistant message whose weight is
 * not 0: its rendered content (text and tool calls) and its end-of-turn token; everything else is 0.
 */
export function tokenizeChatExample(chat: ChatTokenizer, line: { messages: Message[]; tools?: unknown[] }): TokenizedExample {
  const messages = toTemplateMessages(line.messages);
  const text = chat.template.render({ messages, tools: line.tools });
  const spans: Span[] = [];
  line.messages.forEach((m, i) => {
    if (m.role === 'assistant' && m.weight !== 0) spans.push(assistantSpan(chat, messages, i, line.tools, text));
  });
  const cuts = spans.flat();
  const { ids, boundaries } = encodeWithCuts(chat.tokenizer, text, cuts);
  const weights = new Uint8Array(ids.length);
  spans.forEach((_, k) => weights.fill(1, boundaries[2 * k]!.before, boundaries[2 * k + 1]!.after));
  return { ids, weights };
}

/** A preference line → the prompt ids and each completion's ids, weighted like a trained assistant message. */
export function tokenizePreferenceExample(chat: ChatTokenizer, line: Record<string, any>): TokenizedPreference {
  const input = toTemplateMessages(line.input.messages);
  const tools = line.input.tools as unknown[] | undefined;
  const completion = (output: Message[]): { promptIds: Int32Array; completion: TokenizedExample } => {
    const messages = [...input, ...toTemplateMessages(output)];
    const text = chat.template.render({ messages, tools });
    const [start, end] = assistantSpan(chat, messages, input.length, tools, text);
    const { ids, boundaries } = encodeWithCuts(chat.tokenizer, text, [start, end]);
    const promptEnd = boundaries[0]!.before;
    const weights = new Uint8Array(ids.length - promptEnd).fill(1, 0, boundaries[1]!.after - promptEnd);
    return { promptIds: ids.slice(0, promptEnd), completion: { ids: ids.slice(promptEnd), weights } };
  };
  const chosen = completion(line.preferred_output ?? line.preferred_completion);
  const rejected = completion(line.non_preferred_output ?? line.non_preferred_completion);
  if (!sameIds(chosen.promptIds, rejected.promptIds)) throw new Error('preference prompt tokenizes differently before its two completions');
  return { promptIds: chosen.promptIds, chosen: chosen.completion, rejected: rejected.completion };
}

/**
 * Where assistant message `i` lies in `text` (the render of the whole conversation), found from the template.
 * It starts where the render of the messages before it plus the generation prompt ends (so what a model writes after
 * the generation prompt, such as an empty think block, is trained); when that is not a prefix of `text` (Llama-3 writes
 * BOS only before a first message), it starts where sentinel content put in its place appears.
 * It ends after the template's end-of-turn marker, learned by rendering the same turn with sentinel content.
 */
function assistantSpan(chat: ChatTokenizer, messages: TemplateMessage[], i: number, tools: unknown[] | undefined, text: string): Span {
  const prompt = chat.template.render({ messages: messages.slice(0, i), tools, addGenerationPrompt: true });
  const start = text.startsWith(prompt) ? prompt.length : sentinelStart(chat, messages, i, tools, text);
  const probe = chat.template.render({ messages: [...messages.slice(0, i), { role: 'assistant', content: SENTINEL }], tools });
  const at = probe.indexOf(SENTINEL);
  if (at < 0) throw new Error('chat template does not render assistant content');
  const marker = endOfTurnMarker(chat.tokenizer, probe.slice(at + SENTINEL.length));
  if (marker === '') {
    const whole = chat.template.render({ messages: messages.slice(0, i + 1), tools });
    if (!text.startsWith(whole)) throw new Error(`chat template marks no end of turn and is not prefix-stable at message ${i}`);
    return [start, whole.length];
  }
  const end = text.indexOf(marker, start);
  if (end < 0) throw new Error(`end of turn ${JSON.stringify(marker)} not found after assistant message ${i}`);
  return [start, end + marker.length];
}

function sentinelStart(chat: ChatTokenizer, messages: TemplateMessage[], i: number, tools: unknown[] | undefined, text: string): number {
  const probe = chat.template.render({ messages: messages.map((m, k) => (k === i ? { ...m, content: SENTINEL } : m)), tools });
  const at = probe.indexOf(SENTINEL);
  if (at < 0 || !text.startsWith(probe.slice(0, at))) {
    throw new Error(`chat template renders the conversation before assistant message ${i} differently from its prompt`);
  }
  return at;
}

/** The part of what follows an assistant turn that belongs to it: up to the first eos token, else the non-blank part. */
function endOfTurnMarker(tokenizer: ModelTokenizer, after: string): string {
  let cut = -1;
  for (const id of tokenizer.eosTokenIds) {
    const eos = tokenizer.decode([id]);
    const at = eos === '' ? -1 : after.indexOf(eos);
    if (at >= 0 && (cut < 0 || at + eos.length < cut)) cut = at + eos.length;
  }
  return cut >= 0 ? after.slice(0, cut) : after.trimEnd();
}

/** For a character position: tokens wholly before it, and the index just past the token that contains it. */
interface Boundary {
  before: number;
  after: number;
}

/**
 * Encodes `text` as one string (the ids serving would see) and locates each cut position among its tokens.
 * Byte-level tokenizers: token offsets are prefix sums of their UTF-8 lengths, one encode in all.
 * Others: encoding the pieces between cuts separately gives the same ids when no token straddles a cut (exact); failing
 * that, each cut is located by the longest common prefix with the encoding of the text before it, which can place a
 * cut one token early where pre-tokenization looks ahead (whitespace runs before the cut).
 * A token that straddles a cut counts as overlapping both sides.
 */
export function encodeWithCuts(tokenizer: ModelTokenizer, text: string, cuts: number[]): { ids: Int32Array; boundaries: Boundary[] } {
  const ids = Int32Array.from(tokenizer.encode(text));
  return { ids, boundaries: byteOffsetBoundaries(tokenizer, text, ids, cuts) ?? encodedPrefixBoundaries(tokenizer, text, ids, cuts) };
}

function byteOffsetBoundaries(tokenizer: ModelTokenizer, text: string, ids: Int32Array, cuts: number[]): Boundary[] | null {
  const lengths = tokenizer.tokenUtf8Lengths;
  if (!lengths || !tokenizer.leavesUnchanged(text)) return null;
  const ends = new Float64Array(ids.length); // byte offset where each token ends
  let offset = 0;
  for (let k = 0; k < ids.length; k++) ends[k] = offset += lengths[ids[k]!]!;
  if (offset !== Buffer.byteLength(text)) return null;
  return cuts.map((cut) => {
    const at = Buffer.byteLength(text.slice(0, cut));
    let before = 0;
    while (before < ids.length && ends[before]! <= at) before++;
    const straddles = before < ids.length && ends[before]! - lengths[ids[before]!]! < at;
    return { before, after: straddles ? before + 1 : before };
  });
}

function encodedPrefixBoundaries(tokenizer: ModelTokenizer, text: string, ids: Int32Array, cuts: number[]): Boundary[] {
  const points = [...new Set(cuts)].sort((a, b) => a - b);
  const pieceIds: number[] = [];
  const tokenAt = new Map<number, number>();
  let from = 0;
  for (const p of [...points, text.length]) {
    if (p > from) pieceIds.push(...tokenizer.encode(text.slice(from, p)));
    tokenAt.set(p, pieceIds.length);
    from = p;
  }
  if (sameIds(pieceIds, ids)) return cuts.map((c) => ({ before: tokenAt.get(c)!, after: tokenAt.get(c)! }));
  const located = new Map<number, Boundary>();
  for (const p of points) {
    const head = tokenizer.encode(text.slice(0, p));
    let common = 0;
    while (common < head.length && common < ids.length && head[common] === ids[common]) common++;
    located.set(p, { before: common, after: common === head.length ? common : Math.min(common + 1, ids.length) });
  }
  return cuts.map((c) => located.get(c)!);
}

function sameIds(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
