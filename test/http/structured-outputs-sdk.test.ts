// Structured outputs through the official SDK: parse() with zod on a base and an ft: model (greedy and sampled, streamed and not, n > 1), tool_choice modes, schemas outside the strict subset.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Ajv from 'ajv';
import OpenAI from 'openai';
import { LengthFinishReasonError } from 'openai/core/error';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { resolveLoraConfig } from '../../src/engine/lora/config.ts';
import { saveAdapter } from '../../src/engine/lora/peft.ts';
import { DEFAULT_MODEL_ID, ensureDefaultModel } from '../../src/engine/models/default-model.ts';
import { readModelDir } from '../../src/engine/models/model-dir.ts';
import { loraSpecs } from '../../src/engine/train/graphs.ts';
import { registerFineTunedModel } from '../helpers/store.ts';
import { randomTensors } from '../engine/fixtures.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-structured-'));
const modelDir = ensureDefaultModel(join(dataDir, 'models'));
const TUNED = `ft:${DEFAULT_MODEL_ID}:default:json:Ee55Ff66`;

/** Registers an ft: model with a random (non-zero) r4 adapter: its rows decode differently from the base model's. */
async function registerTunedModel(): Promise<void> {
  const config = readModelDir(modelDir).config;
  const lora = resolveLoraConfig({ r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'down_proj'] });
  const specs = loraSpecs(config, lora);
  const values = randomTensors(specs, 7, 0.3);
  saveAdapter(join(dataDir, 'adapters/json'), lora, new Map(specs.map((s) => [s.name, { dims: s.dims, data: Float32Array.from(values.get(s.name)!) }])), DEFAULT_MODEL_ID);
  await registerFineTunedModel(dataDir, { id: TUNED, project: 'default', base_model: DEFAULT_MODEL_ID, adapter_dir: 'adapters/json', job_id: null, step: null, created_at: 1_700_000_000, base_precision: 'fp32' });
}

let server: TestServer;
let client: OpenAI;
before(async () => {
  await registerTunedModel();
  server = await startTestServer({ dataDir });
  client = server.client();
});
after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

// The built-in model babbles, so the grammar does all the work. Every field is bounded (enums, ranges, a pattern,
// maxItems) so that a reply ends within max_tokens whatever the model prefers.
const Ticket = z.object({
  kind: z.enum(['question', 'complaint', 'praise']),
  level: z.number().int().min(1).max(5),
  urgent: z.boolean(),
  code: z.string().regex(/^[a-z]{2,4}$/),
  tags: z.array(z.enum(['bill', 'ship'])).max(2),
  note: z.enum(['vip', 'new']).nullable(),
  via: z.union([z.object({ step: z.number().int().min(0).max(9) }), z.object({ why: z.enum(['none', 'other']) })]),
});
const ticketFormat = zodResponseFormat(Ticket, 'ticket');
const validateTicket = new Ajv.default({ strict: false }).compile(ticketFormat.json_schema.schema!);

const PROMPTS = [
  'My parcel never arrived.', 'Thanks, great service!', 'How do I reset my password?', 'I was charged twice.', 'Where is my refund?',
  'Can I change the delivery address?', 'The app crashes on start.', 'Do you ship to Norway?', 'Love the new design.', 'Cancel my order please.',
  'Is there a student discount?', 'My invoice is wrong.', 'The courier was rude.', 'Which plan fits a team of five?', 'How long is the warranty?',
  'Your support fixed it, thanks.', 'I cannot log in since yesterday.', 'Please call me back.', 'Why was my card declined?', 'The box was damaged.',
];

function checkTicket(parsed: unknown, text: string | null | undefined, where: string): void {
  assert.ok(parsed, `${where}: no parsed message (content ${JSON.stringify(text)})`);
  assert.ok(validateTicket(parsed), `${where}: ${text} fails the schema: ${JSON.stringify(validateTicket.errors)}`);
  assert.deepEqual(Ticket.parse(parsed), parsed, where);
  assert.deepEqual(JSON.parse(text!), parsed, where);
}

test('parse() with a zod schema: 20 prompts on the base and an ft: model, greedy and sampled, streamed and not, n = 2, all at once', async () => {
  await Promise.all(
    PROMPTS.map(async (prompt, i) => {
      const params = {
        model: i % 2 ? TUNED : DEFAULT_MODEL_ID,
        messages: [{ role: 'user' as const, content: prompt }],
        response_format: ticketFormat,
        max_completion_tokens: 400,
        ...(i % 3 === 0 ? { temperature: 0 } : { temperature: 1, seed: 100 + i }),
        n: i % 8 === 0 ? 2 : 1,
      };
      const where = `prompt ${i} (${params.model}, ${i % 3 === 0 ? 'greedy' : 'sampled'}, ${i % 4 >= 2 ? 'streamed' : 'whole'})`;
      const completion = i % 4 >= 2 ? await client.chat.completions.stream(params).finalChatCompletion() : await client.chat.completions.parse(params);
      assert.equal(completion.choices.length, params.n, where);
      for (const choice of completion.choices) {
        assert.equal(choice.finish_reason, 'stop', where);
        assert.equal(choice.message.refusal, null, where);
        checkTicket(choice.message.parsed, choice.message.content, where);
      }
    }),
  );
});

test('json_object and non-strict json_schema replies parse; a max_tokens cut-off is finish_reason length, which parse() raises as hosted', async () => {
  const ask = [{ role: 'user' as const, content: 'Reply in JSON.' }];
  const object = await client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, response_format: { type: 'json_object' }, max_completion_tokens: 400, temperature: 0 });
  const value = JSON.parse(object.choices[0].message.content!);
  assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value));
  const lenient = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] };
  const loose = await client.chat.completions.create({ model: TUNED, messages: ask, response_format: { type: 'json_schema', json_schema: { name: 'loose', schema: lenient } }, max_completion_tokens: 400, seed: 3 });
  assert.equal(typeof JSON.parse(loose.choices[0].message.content!).ok, 'boolean');
  await assert.rejects(client.chat.completions.parse({ model: DEFAULT_MODEL_ID, messages: ask, response_format: ticketFormat, max_completion_tokens: 3 }), LengthFinishReasonError);
});

test('a schema outside the strict subset is a 400 naming the keyword and where it is', async () => {
  const ask = [{ role: 'user' as const, content: 'Hi' }];
  const strict = (schema: Record<string, unknown>) => client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, response_format: { type: 'json_schema', json_schema: { name: 'bad', strict: true, schema } } });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ type: 'object', properties: { name: { type: 'string', minLength: 2 } }, required: ['name'], additionalProperties: false }, /context=\('properties', 'name'\), 'minLength' is not permitted/],
    [{ type: 'object', properties: { a: { type: 'string' } }, required: [], additionalProperties: false }, /'required' is required .* Missing 'a'/],
    [{ type: 'object', properties: {}, required: [] }, /'additionalProperties' is required to be supplied and to be false/],
    [{ anyOf: [{ type: 'object' }] }, /root must be an object schema/],
    [{ type: 'object', properties: { a: { $ref: '#/$defs/gone' } }, required: ['a'], additionalProperties: false }, /'\$ref' '#\/\$defs\/gone' does not point into this schema/],
  ];
  for (const [schema, message] of cases) {
    await assert.rejects(strict(schema), (e: any) => e.status === 400 && e.param === 'response_format.json_schema.schema' && e.code === 'invalid_json_schema' && message.test(e.message), JSON.stringify(schema));
  }
  await assert.rejects(client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, response_format: { type: 'json_schema' } as never }), (e: any) => e.status === 400 && e.param === 'response_format.json_schema');
  // The server keeps serving constrained requests after them.
  const ok = await client.chat.completions.parse({ model: DEFAULT_MODEL_ID, messages: ask, response_format: ticketFormat, max_completion_tokens: 400, temperature: 0 });
  checkTicket(ok.choices[0].message.parsed, ok.choices[0].message.content, 'after the 400s');
});

const weatherParameters = { type: 'object', properties: { city: { type: 'string', enum: ['Oslo', 'Rome', 'Lima'] }, unit: { type: 'string', enum: ['c', 'f'] } }, required: ['city', 'unit'], additionalProperties: false };
const timeParameters = { type: 'object', properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false };
const tools: OpenAI.ChatCompletionFunctionTool[] = [
  { type: 'function', function: { name: 'get_weather', strict: true, parameters: weatherParameters } },
  { type: 'function', function: { name: 'get_time', strict: true, parameters: timeParameters } },
];
const weatherArgs = new Ajv.default().compile(weatherParameters);
const timeArgs = new Ajv.default().compile(timeParameters);

function checkCalls(message: OpenAI.ChatCompletionMessage, names: string[], where: string) {
  const calls = message.tool_calls ?? [];
  assert.ok(calls.length > 0, `${where}: no tool calls in ${JSON.stringify(message)}`);
  for (const call of calls) {
    assert.equal(call.type, 'function');
    if (call.type !== 'function') continue;
    assert.ok(names.includes(call.function.name), `${where}: ${call.function.name}`);
    const args = JSON.parse(call.function.arguments);
    assert.ok((call.function.name === 'get_weather' ? weatherArgs : timeArgs)(args), `${where}: ${call.function.arguments}`);
  }
  return calls;
}

test('tool_choice required and named: the reply is calls with valid arguments (streamed too); parallel_tool_calls false: one call', async () => {
  const ask = [{ role: 'user' as const, content: 'Weather in Oslo, and the time?' }];
  const base = { model: DEFAULT_MODEL_ID, messages: ask, tools, max_completion_tokens: 150, seed: 1 };
  const [single, named, streamed, ...required] = await Promise.all([
    client.chat.completions.create({ ...base, model: TUNED, tool_choice: 'required', parallel_tool_calls: false }),
    client.chat.completions.create({ ...base, tool_choice: { type: 'function', function: { name: 'get_time' } }, seed: 2 }),
    client.chat.completions.stream({ ...base, model: TUNED, tool_choice: { type: 'function', function: { name: 'get_weather' } }, temperature: 0 }).finalChatCompletion(),
    ...[1, 2, 3, 4].map((seed) => client.chat.completions.create({ ...base, tool_choice: 'required', seed })),
  ]);
  const counts = required.map((r, i) => checkCalls(r.choices[0].message, ['get_weather', 'get_time'], `required, seed ${i + 1}`).length);
  assert.ok(counts.some((n) => n > 1), `parallel calls are allowed: ${counts}`);
  assert.equal(single.choices[0].finish_reason, 'tool_calls');
  assert.equal(checkCalls(single.choices[0].message, ['get_weather', 'get_time'], 'single').length, 1);
  checkCalls(named.choices[0].message, ['get_time'], 'named');
  assert.equal(streamed.choices[0].finish_reason, 'tool_calls');
  checkCalls(streamed.choices[0].message, ['get_weather'], 'streamed');
});

test('tool_choice none parses no calls; auto with strict tools holds any call to its schema; bad choices are 400s', async () => {
  const ask = [{ role: 'user' as const, content: 'Weather in Oslo?' }];
  const none = await client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, tools, tool_choice: 'none', max_completion_tokens: 5, temperature: 0 });
  assert.equal(none.choices[0].message.tool_calls, undefined);
  assert.equal(typeof none.choices[0].message.content, 'string');
  // auto with strict tools: free text (a babbling model rarely starts a call), any call held to its schema.
  const free = await client.chat.completions.create({ model: TUNED, messages: ask, tools, max_completion_tokens: 60, seed: 5 });
  if (free.choices[0].message.tool_calls) checkCalls(free.choices[0].message, ['get_weather', 'get_time'], 'auto');
  else assert.equal(typeof free.choices[0].message.content, 'string');
  await assert.rejects(client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, tool_choice: 'required' }), (e: any) => e.status === 400 && e.param === 'tool_choice');
  await assert.rejects(
    client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, tools, tool_choice: { type: 'function', function: { name: 'nope' } } }),
    (e: any) => e.status === 400 && e.param === 'tool_choice.function.name' && /nope/.test(e.message),
  );
  const badTool = { type: 'function' as const, function: { name: 'f', strict: true, parameters: { type: 'object', properties: { a: { type: 'string', maxLength: 3 } }, required: ['a'], additionalProperties: false } } };
  await assert.rejects(
    client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, tools: [tools[0], badTool], tool_choice: 'auto' }),
    (e: any) => e.status === 400 && e.param === 'tools[1].function.parameters' && /function 'f'.*'maxLength' is not permitted/.test(e.message),
  );
});
