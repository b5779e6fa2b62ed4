// The grammar engine (xgrammar over the model's vocabulary): every token walk its masks allow ends in text that parses and validates.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Ajv from 'ajv/dist/2020.js';
import { createRng } from '../../../src/engine/random.ts';
import { createGrammarEngine, GrammarError, prefixRules, type CallFormat, type ReplyGrammar } from '../../../src/engine/serve/grammar/grammar-engine.ts';
import { byteLevelTokenizerJson, chatmlTokenizer, CHATML_SPECIALS } from '../../datasets/tokenizer-fixture.ts';
import { createTokenizer } from '../../../src/engine/models/tokenizer.ts';
import { TOOL_CALL_FORMATS } from '../../../src/engine/models/reply-format.ts';

const tokenizer = chatmlTokenizer([['{', '"'], ['"', ':'], ['"', ','], [' ', '"'], ['t', 'r'], ['e', 'n']]);
const V = tokenizer.vocabSize + 7; // padded logits, as real configs often are
const engine = createGrammarEngine(tokenizer, { vocabSize: V, cacheSize: 3 });
const EOS = tokenizer.eosTokenIds[0];
const HERMES: CallFormat = TOOL_CALL_FORMATS.hermes;

/** Walks the grammar with uniformly random allowed tokens (a babbling model), favouring the end when allowed; returns the text. */
async function randomWalk(grammar: ReplyGrammar, seed: number): Promise<string> {
  const constraint = await engine.constraint(await engine.compile(grammar));
  const rng = createRng(seed);
  const ids: number[] = [];
  try {
    for (let step = 0; step < 2000; step++) {
      const mask = await constraint.nextMask();
      assert.equal(mask.length, Math.ceil(V / 32));
      const allowed: number[] = [];
      for (let id = 0; id < V; id++) if ((mask[id >> 5] >>> (id & 31)) & 1) allowed.push(id);
      assert.ok(allowed.length > 0, `no token allowed after ${JSON.stringify(tokenizer.decode(ids))}`);
      for (const id of allowed) assert.ok(id < tokenizer.vocabSize, `padding id ${id} allowed`);
      const id = allowed.includes(EOS) && rng.float() < 0.5 ? EOS : allowed[Math.floor(rng.float() * allowed.length)];
      constraint.accept(id);
      if (id === EOS) return tokenizer.decode(ids, { skipSpecialTokens: true });
      ids.push(id);
    }
    throw new Error('no end within 2000 tokens');
  } finally {
    constraint.release();
  }
}

const schema = {
  type: 'object',
  properties: {
    kind: { type: 'string', enum: ['a', 'b', 'c'] },
    count: { type: 'integer', minimum: 0, maximum: 99 },
    floor: { type: 'integer', minimum: 7 }, // one-sided and exclusive integer bounds, which xgrammar gets wrong as written
    below: { type: 'integer', exclusiveMaximum: -6 },
    ok: { type: 'boolean' },
    note: { anyOf: [{ type: 'string', pattern: '^[a-z]{1,6}$' }, { type: 'null' }] },
    tags: { type: 'array', items: { $ref: '#/$defs/tag' }, maxItems: 3 },
  },
  required: ['kind', 'count', 'floor', 'below', 'ok', 'note', 'tags'],
  additionalProperties: false,
  $defs: { tag: { type: 'object', properties: { t: { type: 'string', enum: ['x', 'y'] } }, required: ['t'], additionalProperties: false } },
};

test('random walks through a strict JSON schema grammar end in JSON that validates', async () => {
  const validate = new Ajv.default().compile(schema);
  for (let seed = 1; seed <= 16; seed++) {
    const text = await randomWalk({ json: { schema, strict: true } }, seed);
    assert.ok(validate(JSON.parse(text)), `${text}: ${JSON.stringify(validate.errors)}`);
    assert.ok(!/\n/.test(text), 'one-line JSON');
  }
});

test('json_object: any JSON object', async () => {
  for (let seed = 1; seed <= 5; seed++) {
    const text = await randomWalk({ json: { schema: { type: 'object' }, strict: false } }, seed);
    const value = JSON.parse(text);
    assert.equal(typeof value, 'object', text);
    assert.ok(value !== null && !Array.isArray(value), text);
  }
});

test('tool calls in the Hermes format: named tools with valid arguments, one call unless parallel', async () => {
  const tools = [
    { name: 'get_weather', parameters: { schema: { type: 'object', properties: { city: { type: 'string', enum: ['Oslo', 'Rome'] } }, required: ['city'], additionalProperties: false }, strict: true } },
    { name: 'get_time', parameters: { schema: { type: 'object', properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false }, strict: true } },
  ];
  let sawParallel = false;
  for (let seed = 1; seed <= 8; seed++) {
    for (const parallel of [false, true]) {
      const text = await randomWalk({ calls: { format: HERMES, tools, parallel } }, seed);
      const blocks = [...text.matchAll(/<tool_call>\n(.*?)\n<\/tool_call>/g)].map((m) => JSON.parse(m[1]));
      assert.equal(text, blocks.map((b) => `<tool_call>\n${JSON.stringify(b).replace(/":/g, '": ').replace(/,"/g, ', "')}\n</tool_call>`).join('\n'));
      if (!parallel) assert.equal(blocks.length, 1);
      sawParallel ||= blocks.length > 1;
      for (const call of blocks) {
        assert.ok(['get_weather', 'get_time'].includes(call.name), text);
        if (call.name === 'get_weather') assert.ok(['Oslo', 'Rome'].includes(call.arguments.city), text);
        else assert.equal(typeof call.arguments.utc, 'boolean', text);
      }
    }
  }
  assert.ok(sawParallel, 'parallel calls were allowed');
});

test('a JSON answer or a call: both grammars joined', async () => {
  const tools = [{ name: 'f', parameters: { schema: { type: 'object' }, strict: false } }];
  const seen = new Set<string>();
  for (let seed = 1; seed <= 12; seed++) {
    const text = await randomWalk({ json: { schema: { type: 'object', properties: { a: { type: 'boolean' } }, required: ['a'], additionalProperties: false }, strict: true }, calls: { format: HERMES, tools, parallel: false } }, seed);
    seen.add(text.startsWith('<tool_call>') ? 'call' : (JSON.parse(text), 'json'));
  }
  assert.deepEqual([...seen].sort(), ['call', 'json']);
});

test('compiled grammars are cached by content and evicted least recently used first', async () => {
  const g = (n: number): ReplyGrammar => ({ json: { schema: { type: 'object', properties: { [`p${n}`]: { type: 'integer' } }, required: [`p${n}`], additionalProperties: false }, strict: true } });
  const first = await engine.compile(g(1));
  assert.equal(await engine.compile(g(1)), first);
  await engine.compile(g(2));
  await engine.compile(g(3));
  await engine.compile(g(1)); // most recent again
  await engine.compile(g(4)); // evicts g(2)
  assert.equal(engine.cached, 3);
  assert.equal(await engine.compile(g(1)), first);
});

test('a schema the engine cannot compile is a GrammarError naming its part; an abort of the module does not last', async () => {
  // An unresolvable $ref fails a fatal check, which aborts the WebAssembly instance (it prints [FATAL] … Aborted()).
  await assert.rejects(engine.compile({ json: { schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }, strict: true } }), (err: unknown) => err instanceof GrammarError && err.part === 'json');
  const text = await randomWalk({ json: { schema: { type: 'object', properties: { b: { type: 'boolean' } }, required: ['b'], additionalProperties: false }, strict: true } }, 1);
  assert.match(text, /^\{"b": (true|false)\}$/);
});

test('rule renaming leaves string literals and character classes alone', () => {
  assert.equal(prefixRules('root ::= "a b" [^\\]x] rest (= [ \\n]* [,}\\]:])\nrest ::= "\\"q\\""', 'p_'), 'p_root ::= "a b" [^\\]x] p_rest (= [ \\n]* [,}\\]:])\np_rest ::= "\\"q\\""');
});

test('a marker that is a special token (Mistral [TOOL_CALLS]) may be written as that token; other special tokens never', async () => {
  const mistral = createTokenizer(byteLevelTokenizerJson([...CHATML_SPECIALS, '[TOOL_CALLS]']), { eos_token: '<|im_end|>' });
  const marker = mistral.encode('[TOOL_CALLS]');
  assert.equal(marker.length, 1);
  const grammar: ReplyGrammar = { calls: { format: TOOL_CALL_FORMATS.mistral, tools: [{ name: 'f', parameters: { schema: { type: 'object' }, strict: false } }], parallel: true } };
  for (const markers of [['[TOOL_CALLS]'], []]) {
    const mistralEngine = createGrammarEngine(mistral, { vocabSize: mistral.vocabSize, markers });
    const constraint = await mistralEngine.constraint(await mistralEngine.compile(grammar));
    const mask = await constraint.nextMask();
    const allowed = (id: number) => ((mask[id >> 5] >>> (id & 31)) & 1) === 1;
    assert.equal(allowed(marker[0]), markers.length > 0);
    assert.ok(allowed('['.charCodeAt(0)), 'the marker may also be spelled in byte tokens');
    for (const special of ['<|im_start|>', '<|endoftext|>']) assert.ok(!allowed(mistral.encode(special)[0]));
    constraint.release();
  }
});

const weather = { schema: { type: 'object', properties: { city: { type: 'string', enum: ['Oslo', 'Rome'] } }, required: ['city'], additionalProperties: false }, strict: true };
const autoTools = [{ name: 'get_weather', parameters: weather }, { name: 'get_time', parameters: { schema: { type: 'object' }, strict: false } }];

/** A tool_choice auto matcher in `format`, and what it allows after each further text (fed as the tokenizer spells it). */
async function autoCalls(format: CallFormat, parallel = false) {
  const constraint = await engine.constraint(await engine.compile({ calls: { format, tools: autoTools, parallel }, textAround: true }));
  const allowedAfter = async (text: string) => {
    for (const id of tokenizer.encode(text)) constraint.accept(id);
    const mask = await constraint.nextMask();
    const allowed = (c: string) => ((mask[c.charCodeAt(0) >> 5] >>> (c.charCodeAt(0) & 31)) & 1) === 1;
    return Object.assign(allowed, { end: ((mask[EOS >> 5] >>> (EOS & 31)) & 1) === 1 });
  };
  return { allowedAfter, release: () => constraint.release() };
}

test('tool_choice auto: free text, but a call, once its markup starts, names a tool and has valid arguments', async () => {
  const { allowedAfter, release } = await autoCalls(HERMES);
  let allowed = await allowedAfter('');
  assert.ok(allowed('S') && allowed('<') && allowed('{'), 'any text first');
  assert.ok(allowed.end, 'a reply without calls may end');
  allowed = await allowedAfter('Sure, <tool_call>');
  assert.ok(allowed('\n') && !allowed('x'), 'the call markup, once begun, goes on');
  allowed = await allowedAfter('\n{"name": "get_');
  assert.ok(allowed('w') && allowed('t') && !allowed('x'), 'only the tools offered');
  allowed = await allowedAfter('weather", "arguments": {"city": "');
  assert.ok(allowed('O') && allowed('R') && !allowed('P'), 'arguments follow the schema');
  allowed = await allowedAfter('Rome"}}\n</tool_call>');
  assert.ok(allowed.end, 'the reply may end after the call');
  release();
});

test('tool_choice auto, Mistral: free text, but after [TOOL_CALLS] a list of valid calls that ends the reply', async () => {
  const { allowedAfter, release } = await autoCalls(TOOL_CALL_FORMATS.mistral, true);
  let allowed = await allowedAfter('');
  assert.ok(allowed('S') && allowed('[') && allowed('{') && allowed.end, 'any text first, or none');
  allowed = await allowedAfter('Let me check. [TOOL_CALLS]');
  assert.ok(allowed('[') && !allowed('x') && !allowed.end, 'the marker opens the list');
  allowed = await allowedAfter('[{"name": "get_');
  assert.ok(allowed('w') && !allowed('x'), 'only the tools offered');
  allowed = await allowedAfter('weather", "arguments": {"city": "');
  assert.ok(allowed('R') && !allowed('P'), 'arguments follow the schema');
  allowed = await allowedAfter('Rome"}}');
  assert.ok(allowed(',') && allowed(']') && !allowed('x'), 'another call, or the end of the list');
  allowed = await allowedAfter(', {"name": "get_time", "arguments": {}}]');
  assert.ok(allowed.end && !allowed('S'), 'the list ends the reply');
  release();
});

test('tool_choice auto, Llama 3: a reply opening with JSON is a valid call; other text is free, and a call may follow <|python_tag|>', async () => {
  const call = await autoCalls(TOOL_CALL_FORMATS.llama3);
  let allowed = await call.allowedAfter('');
  assert.ok(allowed('{') && allowed('S') && allowed('<') && !allowed(' ') && !allowed('\n'), 'a call or text; no leading whitespace (the parser reads " {" as a call)');
  allowed = await call.allowedAfter('{');
  assert.ok(allowed('"') && !allowed('x'), 'a reply opening with { is a call');
  allowed = await call.allowedAfter('"name": "get_weather", "parameters": {"city": "');
  assert.ok(allowed('O') && !allowed('P'), 'its arguments follow the schema');
  allowed = await call.allowedAfter('Oslo"}}');
  assert.ok(allowed.end && !allowed(';'), 'one call (Llama 3 templates take one a turn), then the end');
  call.release();

  const text = await autoCalls(TOOL_CALL_FORMATS.llama3);
  allowed = await text.allowedAfter('It is sunny in Zürich {"name": "x"} <b');
  assert.ok(allowed('>') && allowed.end, 'after the first character, text is free');
  allowed = await text.allowedAfter('> <|python_tag|>');
  assert.ok(allowed('{') && !allowed('x') && !allowed.end, 'the trigger opens a call');
  allowed = await text.allowedAfter('{"name": "get_');
  assert.ok(allowed('w') && !allowed('x'), 'only the tools offered');
  text.release();

  const tag = await autoCalls(TOOL_CALL_FORMATS.llama3);
  allowed = await tag.allowedAfter('<|python_tag|>');
  assert.ok(allowed('{') && !allowed('x') && !allowed.end, 'a reply may open with the trigger, then a call');
  tag.release();
});
