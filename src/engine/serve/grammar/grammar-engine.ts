// Grammar-constrained decoding for one base model: reply grammars (a JSON schema, tool calls in the template's format)
// compiled once against the model's vocabulary and kept in an LRU cache, and per-row matchers giving each step's token bitmask.
import type { ToolCallFormat } from '../../models/reply-format.ts';
import type { ModelTokenizer } from '../../models/tokenizer.ts';
import { discardXgrammar, xgrammar, type CompiledGrammar, type GrammarCompiler, type StructuralTagFormat, type XGrammar } from './xgrammar.ts';

// Dims: V vocab (the model's logits width), W = ceil(V / 32) bitmask words.

/** A JSON value the reply must be: `strict` forbids properties the schema does not list (OpenAI's strict mode). */
export interface JsonGrammar {
  schema: Record<string, unknown> | boolean;
  strict: boolean;
}

/**
 * How a chat-template family writes tool calls: `open`, then each call as `callOpen` + `{"name": …, <argumentsKey>: {…}}`
 * + `callClose`, joined by `separator`, then `close`; inside free text they start at a trigger, or (`bareJson`) as
 * JSON opening the reply (reply-format.ts owns the table).
 */
export type CallFormat = Pick<ToolCallFormat, 'open' | 'callOpen' | 'callClose' | 'separator' | 'close' | 'argumentsKey' | 'triggers' | 'bareJson'>;

/** The reply must be calls to these tools (at most one unless `parallel`), arguments matching each tool's parameters. */
export interface CallsGrammar {
  format: CallFormat;
  tools: { name: string; parameters: JsonGrammar }[];
  parallel: boolean;
}

/**
 * What a reply must be: JSON, tool calls, or (both given) either of them; or, with `textAround`, any text in which
 * calls, once they begin (at a trigger, or as bare JSON opening the reply), follow `calls` (tool_choice auto).
 */
export type ReplyGrammar = { json: JsonGrammar; calls?: CallsGrammar; textAround?: undefined } | { json?: undefined; calls: CallsGrammar; textAround?: boolean };

/** A grammar that cannot be compiled (a schema xgrammar rejects): the message says why, `param` names the part of the grammar. */
export class GrammarError extends Error {
  constructor(
    message: string,
    readonly part: 'json' | { tool: string },
  ) {
    super(message);
  }
}

/** One row's grammar state: which tokens may come next, and the tokens taken. */
export interface TokenConstraint {
  /** Allowed next tokens [W]: bit (id & 31) of word (id >> 5) is set when `id` may come next. */
  nextMask(): Promise<Int32Array>;
  /** Advances past token `id` (an end-of-turn token once the grammar is complete); throws if the grammar forbids it. */
  accept(id: number): void;
  /** Frees the matcher (WebAssembly memory): the row finished, failed or was cancelled. */
  release(): void;
}

export interface GrammarEngine {
  /** The compiled grammar (cached by its content). Throws GrammarError for a schema the engine rejects. */
  compile(grammar: ReplyGrammar): Promise<CompiledGrammar>;
  /** A fresh matcher at the start of `compiled`. */
  constraint(compiled: CompiledGrammar): Promise<TokenConstraint>;
  /** Compiled grammars in the cache. */
  readonly cached: number;
}

export interface GrammarEngineOptions {
  /** The logits width (config.json's vocab_size, which may exceed the tokenizer's ids). */
  vocabSize: number;
  /** Compiled grammars kept, least recently used evicted first. */
  cacheSize?: number;
  /**
   * Texts a grammar may write as the special token they are (tool-call markers such as Mistral's `[TOOL_CALLS]`, which
   * the reply parser reads); other special tokens never appear inside a grammar.
   */
  markers?: readonly string[];
}

/**
 * JSON text without free whitespace (`{"a": 1, "b": [2, 3]}`): a model allowed any whitespace can fill max_tokens with
 * it, and one-line JSON is what tuned models are usually trained to write.
 */
const JSON_SEPARATORS: [string, string] = [', ', ': '];

/** The engine for `tokenizer`'s model; the vocabulary is prepared on the first compile (~0.1–1 s at 32k–150k tokens). */
export function createGrammarEngine(tokenizer: ModelTokenizer, o: GrammarEngineOptions): GrammarEngine {
  const cacheSize = o.cacheSize ?? 64;
  const cache = new Map<string, Promise<CompiledGrammar>>(); // insertion order = recency
  let compiler: { xg: XGrammar; compiler: Promise<GrammarCompiler> } | null = null;

  async function createCompiler(xg: XGrammar): Promise<GrammarCompiler> {
    const vocab = tokenizer.vocabulary();
    const markerIds = new Set((o.markers ?? []).map((m) => tokenizer.encode(m)).flatMap((ids) => (ids.length === 1 ? ids : [])));
    // [V]: special tokens as '' (never allowed inside a grammar; end-of-turn ids are given as stop tokens), padding ids too.
    const tokens = Array.from({ length: o.vocabSize }, (_, id) => (vocab.special.has(id) && !markerIds.has(id) ? '' : (vocab.tokens[id] ?? '')));
    const info = await xg.TokenizerInfo.createTokenizerInfo(tokens, vocab.encoding, vocab.prependsSpace, o.vocabSize, tokenizer.eosTokenIds);
    return xg.GrammarCompiler.createGrammarCompiler(info, false);
  }

  /** The compiler of the current xgrammar module (a new one, and an empty cache, after the module was discarded). */
  function currentCompiler(): Promise<GrammarCompiler> {
    const xg = xgrammar();
    if (compiler?.xg !== xg) {
      if (compiler) cache.clear();
      compiler = { xg, compiler: createCompiler(xg) };
    }
    return compiler.compiler;
  }

  /** A JSON schema's grammar as EBNF whose rule names all start with `prefix` (so several fit in one grammar). */
  async function jsonRules(json: JsonGrammar, prefix: string, part: GrammarError['part']): Promise<string> {
    try {
      return prefixRules(await xgrammar().Testings._jsonSchemaToEBNF(JSON.stringify(enforceableBounds(json.schema)), false, -1, JSON_SEPARATORS, json.strict), prefix);
    } catch (err) {
      throw compileError(err, part);
    }
  }

  /**
   * The reply grammar in xgrammar's EBNF: `root` is the JSON value, the calls, or either. Calls are written out here
   * (not as xgrammar structural tags, whose repeated tags cannot be followed by a closing text or be one side of a choice).
   */
  async function replyEbnf(grammar: ReplyGrammar): Promise<string> {
    const rules: string[] = [];
    const roots: string[] = [];
    if (grammar.json) {
      rules.push(await jsonRules(grammar.json, 'j_', 'json'));
      roots.push('j_root');
    }
    if (grammar.calls) {
      rules.push(...(await callRules(grammar.calls)));
      rules.push(`calls ::= ${literal(grammar.calls.format.open)} call_list ${literal(grammar.calls.format.close)}`);
      roots.push('calls');
    }
    return [`root ::= ${roots.join(' | ')}`, ...rules].join('\n');
  }

  /** EBNF rules `call` (one call to an offered tool) and `call_list` (the calls between `open` and `close`). */
  async function callRules({ format, tools, parallel }: CallsGrammar): Promise<string[]> {
    const rules: string[] = [];
    const calls: string[] = [];
    for (const [i, tool] of tools.entries()) {
      rules.push(await jsonRules(tool.parameters, `t${i}_`, { tool: tool.name }));
      calls.push(`${literal(callBegin(format, tool.name))} t${i}_root ${literal(`}${format.callClose}`)}`);
    }
    rules.push(`call ::= ${calls.join(' | ')}`);
    rules.push(`call_list ::= call${parallel ? ` (${literal(format.separator)} call)*` : ''}`);
    return rules;
  }

  /**
   * Free text with calls held to the grammar once they start. Calls with markup of their own (`<tool_call>`): xgrammar's
   * triggered tags, one tag per tool. A list opened by a trigger (Mistral's `[TOOL_CALLS][…]`): one triggered tag
   * holding the list, the reply's end. Bare JSON (Llama 3.x): EBNF, see bareJsonInText.
   */
  async function callsInText(calls: CallsGrammar): Promise<StructuralTagFormat | string> {
    const { format, tools, parallel } = calls;
    if (format.callOpen.trim() !== '' && format.open === '' && format.close === '') {
      const tags = [];
      for (const tool of tools) {
        tags.push({
          type: 'tag' as const,
          begin: callBegin(format, tool.name),
          content: { type: 'grammar' as const, grammar: await jsonRules(tool.parameters, '', { tool: tool.name }) },
          end: `}${format.callClose}`,
        });
      }
      return { type: 'triggered_tags', triggers: [format.callOpen.trimEnd()], tags, at_least_one: false, stop_after_first: !parallel };
    }
    if (format.bareJson) return bareJsonInText(calls);
    if (!format.open || !format.triggers.some((t) => format.open.startsWith(t))) throw new Error(`calls opened by ${JSON.stringify(format.open)} cannot be told apart from text`);
    const list: StructuralTagFormat = { type: 'grammar', grammar: ['root ::= call_list', ...(await callRules(calls))].join('\n') };
    return { type: 'triggered_tags', triggers: format.triggers, tags: [{ type: 'tag', begin: format.open, content: list, end: format.close }], at_least_one: false, stop_after_first: true };
  }

  /**
   * tool_choice auto for bare-JSON calls (Llama 3.x), in EBNF (xgrammar's structural tags cannot put free text on one
   * side of a choice): the reply is the calls, or text that opens with neither `{` nor whitespace (the reply parser
   * reads a reply opening with `{` after any whitespace as a call) in which the trigger, wherever it comes (the start
   * included), opens the calls that end the reply. Text is the automaton "matched k characters of the trigger" (`w0`
   * none, `w<k>` k); a trigger whose first character recurs in it would need a fuller automaton, and no family has one.
   */
  async function bareJsonInText(calls: CallsGrammar): Promise<string> {
    const [trigger, ...more] = calls.format.triggers;
    if (!trigger || more.length > 0 || trigger.indexOf(trigger[0], 1) >= 0) throw new Error(`bare JSON calls with triggers ${JSON.stringify(calls.format.triggers)}: no grammar for the text around them`);
    const escapes: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r', '\\': '\\\\', ']': '\\]', '-': '\\-', '^': '\\^' };
    const not = (...chars: string[]) => `[^${chars.map((c) => escapes[c] ?? c).join('')}]`;
    const first = trigger[0];
    const rules = await callRules(calls);
    rules.push(`root ::= call_list | ${not('{', first, ' ', '\t', '\n', '\r')} w0 | ${literal(first)} w1`);
    rules.push(`w0 ::= "" | ${not(first)} w0 | ${literal(first)} w1`);
    for (let k = 1; k < trigger.length; k++) {
      const next = k + 1 === trigger.length ? 'call_list' : `w${k + 1}`;
      rules.push(`w${k} ::= "" | ${literal(first)} w1 | ${not(first, trigger[k])} w0 | ${literal(trigger[k])} ${next}`);
    }
    return rules.join('\n');
  }

  async function build(grammar: ReplyGrammar): Promise<CompiledGrammar> {
    const source = grammar.textAround ? await callsInText(grammar.calls) : await replyEbnf(grammar);
    const compiling = currentCompiler();
    try {
      const compiler = await compiling;
      return await (typeof source === 'string' ? compiler.compileGrammar(source) : compiler.compileStructuralTag({ type: 'structural_tag', format: source }));
    } catch (err) {
      throw compileError(err, grammar.json ? 'json' : { tool: grammar.calls!.tools[0]?.name ?? '' });
    }
  }

  return {
    compile(grammar) {
      const key = JSON.stringify(grammar);
      let compiled = cache.get(key);
      if (compiled) cache.delete(key);
      else {
        compiled = build(grammar);
        compiled.catch(() => cache.delete(key)); // a failure is not cached
      }
      cache.set(key, compiled);
      for (const [old, evicted] of cache) {
        if (cache.size <= cacheSize) break;
        cache.delete(old);
        // Matchers made from it hold their own reference, so rows decoding with it go on.
        evicted.then((g) => g.dispose(), () => {});
      }
      return compiled;
    },
    async constraint(compiled) {
      const matcher = await xgrammar().GrammarMatcher.createGrammarMatcher(compiled);
      let released = false;
      return {
        nextMask: () => matcher.getNextTokenBitmask(),
        accept(id) {
          if (!matcher.acceptToken(id)) throw new Error(`the grammar does not allow token ${id} here (the mask was not applied?)`);
        },
        release() {
          if (released) return;
          released = true;
          matcher.dispose();
        },
      };
    },
    get cached() {
      return cache.size;
    },
  };
}

/**
 * The schema with numeric bounds as xgrammar 0.1.27 enforces them correctly (measured by random walks checked with
 * ajv): integer ranges bounded on both sides. So a one-sided integer bound gets the safe-integer limit as its other
 * side and exclusive bounds become inclusive ones; bounds on non-integer numbers and `multipleOf`, which it gets
 * wrong, are dropped (strict requests are refused them before this).
 */
export function enforceableBounds(schema: unknown): unknown {
  if (schema === null || typeof schema !== 'object') return schema;
  if (Array.isArray(schema)) return schema.map(enforceableBounds);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) out[key] = ['enum', 'const', 'default', 'examples'].includes(key) ? value : enforceableBounds(value);
  const types = [out.type].flat();
  if (!types.every((t) => typeof t === 'string') || !types.some((t) => t === 'number' || t === 'integer')) return out;
  const bounds = { minimum: out.minimum, maximum: out.maximum, exclusiveMinimum: out.exclusiveMinimum, exclusiveMaximum: out.exclusiveMaximum };
  for (const key of [...Object.keys(bounds), 'multipleOf']) delete out[key];
  if (types.includes('number') || Object.values(bounds).every((b) => typeof b !== 'number')) return out;
  const low = Math.max(typeof bounds.minimum === 'number' ? Math.ceil(bounds.minimum) : -Infinity, typeof bounds.exclusiveMinimum === 'number' ? Math.floor(bounds.exclusiveMinimum) + 1 : -Infinity);
  const high = Math.min(typeof bounds.maximum === 'number' ? Math.floor(bounds.maximum) : Infinity, typeof bounds.exclusiveMaximum === 'number' ? Math.ceil(bounds.exclusiveMaximum) - 1 : Infinity);
  return { ...out, minimum: Math.max(low, -Number.MAX_SAFE_INTEGER), maximum: Math.min(high, Number.MAX_SAFE_INTEGER) };
}

/** An EBNF string literal of `text` ("" matches nothing). */
const literal = (text: string) => JSON.stringify(text);

/** A call's text up to its arguments object: `callOpen{"name": "<name>", "<argumentsKey>": `. */
const callBegin = (format: CallFormat, name: string) => `${format.callOpen}{"name": ${JSON.stringify(name)}, ${JSON.stringify(format.argumentsKey)}: `;

/**
 * Renames every rule of an EBNF grammar (definitions and references) to `prefix` + name. Identifiers outside string
 * literals and character classes are rule names in xgrammar's EBNF.
 */
export function prefixRules(ebnf: string, prefix: string): string {
  return ebnf.replace(/"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|[A-Za-z_][A-Za-z0-9_]*/g, (m) => (m[0] === '"' || m[0] === '[' ? m : prefix + m));
}

/**
 * xgrammar reports a rejected schema as a C++ exception without its text (this WebAssembly build keeps no messages), or
 * as an abort of the whole module: then the module is dropped so the next grammar gets a fresh one.
 */
function compileError(err: unknown, part: GrammarError['part']): GrammarError {
  if (err instanceof WebAssembly.RuntimeError) discardXgrammar();
  return new GrammarError('the grammar engine (xgrammar) could not compile this schema', part);
}
