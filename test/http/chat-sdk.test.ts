// Serving through the official openai SDK: tuned models answer their trained answers, streaming = non-streaming, n, usage, seeds, errors, Models API, concurrency.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { createChatTokenizer, tokenizeChatExample } from '../../src/datasets/tokenize-example.ts';
import { buildMicroBatch } from '../../src/datasets/batches.ts';
import { DEFAULT_MODEL_ID, ensureDefaultModel } from '../../src/engine/models/default-model.ts';
import { loadTokenizer } from '../../src/engine/models/tokenizer.ts';
import { saveAdapter } from '../../src/engine/lora/peft.ts';
import type { LoraConfig } from '../../src/engine/lora/config.ts';
import { createTrainer } from '../../src/engine/train/trainer.ts';
import { registerFineTunedModel } from '../helpers/store.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { settleOrder } from '../helpers/wait.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-chat-'));
const modelDir = ensureDefaultModel(join(dataDir, 'models'));
const tokenizer = loadTokenizer(modelDir);
const chat = createChatTokenizer(tokenizer);
const QUESTION = 'What is the capital of Atlantis?';
const tuned = [
  { id: `ft:${DEFAULT_MODEL_ID}:default:capital:Aa11Bb22`, answer: 'Poseidonia, under the sea.' },
  { id: `ft:${DEFAULT_MODEL_ID}:default:other:Cc33Dd44`, answer: 'Atlantis has no capital.' },
];
const ask = [{ role: 'user' as const, content: QUESTION }];

/** Trains an r8 adapter (all projections) on one prompt → answer with the engine trainer and registers it as an ft: model. */
async function trainAndRegister(id: string, answer: string, seed: number): Promise<void> {
  const lora: LoraConfig = { r: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
  const trainer = await createTrainer({ modelDir, cacheDir: join(dataDir, 'cache', DEFAULT_MODEL_ID), lora, seed, device: 'cpu' });
  const example = tokenizeChatExample(chat, { messages: [...ask, { role: 'assistant', content: answer }] });
  const batch = buildMicroBatch([example], 2048, tokenizer.padTokenId ?? 0);
  let loss = Infinity;
  for (let step = 0; step < 80 && loss > 0.02; step++) loss = (await trainer.trainStep([batch], 0.003)).loss;
  const adapterDir = `adapters/${id.split(':').at(-1)}`;
  saveAdapter(join(dataDir, adapterDir), lora, trainer.getAdapter(), DEFAULT_MODEL_ID);
  await trainer.close();
  await registerFineTunedModel(dataDir, { id, project: 'default', base_model: DEFAULT_MODEL_ID, adapter_dir: adapterDir, job_id: null, step: null, created_at: 1_700_000_000, base_precision: 'fp32' });
}

let server: TestServer;
let client: OpenAI;
before(async () => {
  for (const [i, t] of tuned.entries()) await trainAndRegister(t.id, t.answer, i + 1);
  server = await startTestServer({ dataDir });
  client = server.client();
});
after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

const greedy = (model: string, extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}) =>
  client.chat.completions.create({ model, messages: ask, temperature: 0, max_completion_tokens: 40, ...extra });

async function streamed(params: OpenAI.ChatCompletionCreateParamsStreaming) {
  const texts: string[] = [];
  const finish: (string | null)[] = [];
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of await client.chat.completions.create(params)) {
    for (const c of chunk.choices) {
      texts[c.index] = (texts[c.index] ?? '') + (c.delta.content ?? '');
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { texts, finish, usage };
}

test('a tuned model answers its trained answer at temperature 0; the base model answers differently', async () => {
  for (const t of tuned) {
    const r = await greedy(t.id);
    assert.equal(r.choices[0].message.content, t.answer);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.model, t.id);
    assert.match(r.id, /^chatcmpl-/);
  }
  const base = await greedy(DEFAULT_MODEL_ID);
  assert.ok(!tuned.some((t) => t.answer === base.choices[0].message.content));
});

test('streaming and non-streaming return the same text; usage matches the tokenizer', async () => {
  for (const params of [
    { model: tuned[0].id, messages: ask, temperature: 0 },
    { model: DEFAULT_MODEL_ID, messages: ask, temperature: 1, seed: 11, max_tokens: 30 },
  ]) {
    const whole = await client.chat.completions.create(params);
    const s = await streamed({ ...params, stream: true, stream_options: { include_usage: true } });
    assert.deepEqual(s.texts, [whole.choices[0].message.content]);
    assert.deepEqual(s.finish, [whole.choices[0].finish_reason]);
    assert.deepEqual(s.usage, whole.usage);
    const prompt = tokenizer.encode(chat.template.render({ messages: ask, addGenerationPrompt: true }));
    const text = whole.choices[0].message.content!;
    const endOfTurn = whole.choices[0].finish_reason === 'stop' ? 1 : 0;
    assert.equal(whole.usage!.prompt_tokens, prompt.length);
    assert.equal(whole.usage!.completion_tokens, tokenizer.encode(text).length + endOfTurn);
    assert.equal(whole.usage!.total_tokens, whole.usage!.prompt_tokens + whole.usage!.completion_tokens);
  }
});

test('n: 3 gives three choices; the same seed gives the same choices; max_tokens ends with length', async () => {
  const params = { model: DEFAULT_MODEL_ID, messages: ask, n: 3, seed: 42, temperature: 2, max_tokens: 8 };
  const a = await client.chat.completions.create(params);
  const b = await client.chat.completions.create(params);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  assert.ok(new Set(a.choices.map((c) => c.message.content)).size > 1);
  assert.ok(a.choices.every((c) => c.finish_reason === 'length'));
  assert.equal(a.usage!.completion_tokens, 24);
  const s = await streamed({ ...params, stream: true });
  assert.deepEqual(s.texts, a.choices.map((c) => c.message.content));
});

test('stop strings and logprobs', async () => {
  const r = await greedy(tuned[0].id, { stop: [', under'], logprobs: true, top_logprobs: 2 });
  assert.equal(r.choices[0].message.content, 'Poseidonia');
  assert.equal(r.choices[0].finish_reason, 'stop');
  const lp = r.choices[0].logprobs!.content!;
  assert.equal(lp.slice(0, 10).map((t) => t.token).join(''), 'Poseidonia');
  assert.ok(lp.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2 && t.top_logprobs[0].token === t.token));
});

test('response_format text is served unconstrained', async () => {
  const r = await greedy(tuned[0].id, { response_format: { type: 'text' } });
  assert.equal(r.choices[0].message.content, tuned[0].answer);
});

test('a reply sent back as history, as SDK users append it, is accepted; image parts and foreign token ids are 400s naming the field', async () => {
  const first = await greedy(tuned[0].id);
  assert.deepEqual(first.choices[0].message.annotations, []);
  const history = [...ask, first.choices[0].message as OpenAI.ChatCompletionMessageParam, { role: 'user' as const, content: QUESTION }];
  assert.equal((await greedy(tuned[0].id, { messages: history })).object, 'chat.completion');
  const image = { role: 'user' as const, content: [{ type: 'image_url' as const, image_url: { url: 'https://example.com/a.png' } }] };
  await assert.rejects(greedy(tuned[0].id, { messages: [image] }), (e: any) => e.status === 400 && e.param === 'messages[0].content[0].type' && e.code === 'unsupported_content');
  for (const stream of [false, true]) {
    const request = client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, logit_bias: { 99999: 5 }, stream } as OpenAI.ChatCompletionCreateParams);
    await assert.rejects(request, (e: any) => e.status === 400 && e.param === 'logit_bias', `stream: ${stream}`);
  }
});

test('unknown models are 404 model_not_found; a prompt past the context is a 400 giving both numbers', async () => {
  await assert.rejects(greedy('ft:nope:default::xxxxxxxx'), (e: any) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(greedy('gpt-4o'), (e: any) => e.status === 404 && e.code === 'model_not_found');
  const long = 'x'.repeat(2100);
  await assert.rejects(
    client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: [{ role: 'user', content: long }] }),
    (e: any) => e.status === 400 && /2048/.test(e.message) && /2\d{3} tokens/.test(e.message.replace('2048 tokens', '')),
  );
});

test('legacy completions: text prompt, echo, same greedy continuation as a chat-rendered prompt', async () => {
  const prompt = chat.template.render({ messages: ask, addGenerationPrompt: true });
  const r = await client.completions.create({ model: tuned[0].id, prompt, temperature: 0, max_tokens: 40, echo: true });
  assert.equal(r.choices[0].text, prompt + tuned[0].answer);
  assert.equal(r.object, 'text_completion');
  assert.equal(r.usage!.prompt_tokens, tokenizer.encode(prompt).length);
  // Token-id prompts, streaming and several prompts at once give the same continuations.
  const ids = tokenizer.encode(prompt);
  const both = await client.completions.create({ model: tuned[0].id, prompt: [ids, ids], temperature: 0, max_tokens: 40 });
  assert.deepEqual(both.choices.map((c) => [c.index, c.text]), [[0, tuned[0].answer], [1, tuned[0].answer]]);
  let text = '';
  for await (const chunk of await client.completions.create({ model: tuned[0].id, prompt, temperature: 0, max_tokens: 40, stream: true })) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, tuned[0].answer);
  await assert.rejects(client.completions.create({ model: DEFAULT_MODEL_ID, prompt: 'y'.repeat(3000) }), (e: any) => e.status === 400 && e.code === 'context_length_exceeded');
  for (const extra of [{ suffix: 'x' }, { best_of: 3 }]) {
    await assert.rejects(client.completions.create({ model: DEFAULT_MODEL_ID, prompt, ...extra }), (e: any) => e.status === 400 && e.param === Object.keys(extra)[0]);
  }
});

test('legacy completions score the prompt with echo and logprobs (max_tokens 0, as evaluation harnesses ask): the logprobs generation reports', async () => {
  const prompt = chat.template.render({ messages: ask, addGenerationPrompt: true });
  const promptIds = tokenizer.encode(prompt);
  // What the tuned model reports while generating its answer…
  const generated = await client.completions.create({ model: tuned[0].id, prompt, temperature: 0, max_tokens: 40, logprobs: 2 });
  const answer = generated.choices[0].logprobs!;
  assert.equal(generated.choices[0].text, tuned[0].answer);
  // …equals what it reports scoring prompt + answer as one echoed prompt.
  const scored = await client.completions.create({ model: tuned[0].id, prompt: [...promptIds, ...tokenizer.encode(tuned[0].answer)], max_tokens: 0, echo: true, logprobs: 2 });
  const lp = scored.choices[0].logprobs!;
  assert.equal(scored.choices[0].text, prompt + tuned[0].answer);
  assert.equal(scored.choices[0].finish_reason, 'length');
  assert.equal(scored.usage!.completion_tokens, 0);
  assert.equal(lp.tokens!.length, promptIds.length + answer.tokens!.length);
  assert.equal(lp.token_logprobs![0], null);
  assert.equal(lp.top_logprobs![0], null);
  assert.ok(lp.token_logprobs!.slice(1).every((v) => v! <= 0) && lp.top_logprobs!.slice(1).every((t) => Object.keys(t!).length === 2));
  assert.deepEqual(lp.text_offset!.slice(0, 3), [0, lp.tokens![0].length, lp.tokens![0].length + lp.tokens![1].length]);
  const tail = lp.token_logprobs!.slice(promptIds.length);
  assert.deepEqual(lp.tokens!.slice(promptIds.length), answer.tokens);
  tail.forEach((v, i) => assert.ok(Math.abs(v! - answer.token_logprobs![i]!) < 1e-4, `answer token ${i}: scored ${v} vs generated ${answer.token_logprobs![i]}`));
  // Streaming: the echoed prompt arrives first, with its logprobs.
  const chunks = [];
  for await (const chunk of await client.completions.create({ model: tuned[0].id, prompt, max_tokens: 3, echo: true, logprobs: 1, temperature: 0, stream: true })) chunks.push(chunk);
  assert.equal(chunks[0].choices[0].text, prompt);
  assert.equal(chunks[0].choices[0].logprobs!.tokens!.length, promptIds.length);
  assert.deepEqual(chunks[0].choices[0].logprobs!.token_logprobs!.slice(0, 1), [null]);
  const streamed = chunks.map((c) => c.choices[0]?.text ?? '').join('');
  assert.ok(streamed.startsWith(prompt) && tuned[0].answer.startsWith(streamed.slice(prompt.length)), streamed);
});

test('dozens of interleaved requests across adapters and the base model each equal their solo response', async () => {
  const models = [DEFAULT_MODEL_ID, tuned[0].id, tuned[1].id];
  const params = Array.from({ length: 24 }, (_, i) => ({
    model: models[i % 3],
    messages: [{ role: 'user' as const, content: i % 2 ? QUESTION : `Say something about ${i}.` }],
    temperature: i % 4 === 0 ? 0 : 0.8,
    seed: i,
    max_tokens: 10 + (i % 5),
  }));
  const solo: (string | null)[] = [];
  for (const p of params) solo.push((await client.chat.completions.create(p)).choices[0].message.content);
  const together = await Promise.all(params.map((p, i) => (i % 3 === 0 ? streamed({ ...p, stream: true }).then((s) => s.texts[0]) : client.chat.completions.create(p).then((r) => r.choices[0].message.content))));
  together.forEach((t, i) => assert.equal(t, solo[i], `request ${i}`));
});

test('Models API: list (base with context length and device, ft models), retrieve with an encoded id, delete', async () => {
  const list = await client.models.list();
  const base = list.data.find((m) => m.id === DEFAULT_MODEL_ID) as any;
  assert.equal(base.owned_by, 'system');
  assert.equal(base.context_length, 2048);
  assert.equal(base.device, 'cpu');
  assert.deepEqual(list.data.filter((m) => m.id.startsWith('ft:')).map((m) => m.id).sort(), tuned.map((t) => t.id).sort());
  assert.equal((await client.models.retrieve(tuned[1].id)).id, tuned[1].id);
  const encoded = await fetch(`${server.baseURL}/models/${encodeURIComponent(tuned[1].id)}`, { headers: { authorization: 'Bearer sk-test' } });
  assert.equal((await encoded.json()).id, tuned[1].id);
  await assert.rejects(client.models.retrieve('ft:none:default::zzzzzzzz'), (e: any) => e.status === 404);
  await assert.rejects(client.models.delete(DEFAULT_MODEL_ID), (e: any) => e.status === 400);

  assert.deepEqual(await client.models.delete(tuned[1].id), { id: tuned[1].id, object: 'model', deleted: true });
  assert.ok(!existsSync(join(dataDir, 'adapters', 'Cc33Dd44')));
  await assert.rejects(greedy(tuned[1].id), (e: any) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(client.models.retrieve(tuned[1].id), (e: any) => e.status === 404);
  assert.equal((await greedy(tuned[0].id)).choices[0].message.content, tuned[0].answer);
});

test('other requests are served while a long generation decodes; a client that goes away mid-stream is dropped', async () => {
  // 1500 greedy tokens, streamed so the list is asked for once decoding has begun; it must be answered before they end.
  const { order, track } = settleOrder();
  let decoding!: () => void;
  const begun = new Promise<void>((resolve) => (decoding = resolve));
  const longStream = await client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, temperature: 0, max_tokens: 1500, stream: true, stream_options: { include_usage: true } });
  const long = track('generation', (async () => {
    let usage: OpenAI.CompletionUsage | null | undefined;
    try {
      for await (const chunk of longStream) {
        if (chunk.choices[0]?.delta.content) decoding();
        usage ??= chunk.usage;
      }
    } finally {
      decoding();
    }
    return usage;
  })());
  await begun;
  await track('models.list', client.models.list());
  assert.deepEqual(order, ['models.list'], 'the list waited for the generation');
  assert.equal((await long)!.completion_tokens, 1500);

  const controller = new AbortController();
  const stream = await client.chat.completions.create({ model: DEFAULT_MODEL_ID, messages: ask, max_tokens: 1500, stream: true }, { signal: controller.signal });
  let chunks = 0;
  try {
    for await (const chunk of stream) {
      chunks++;
      if (chunk.choices[0]?.delta.content) controller.abort();
    }
  } catch (err) {
    assert.equal((err as Error).name, 'APIUserAbortError');
  }
  assert.ok(chunks < 10, `${chunks} chunks arrived after aborting`);
  assert.equal((await greedy(tuned[0].id)).choices[0].message.content, tuned[0].answer);
});
