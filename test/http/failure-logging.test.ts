// Failures no status code can show are logged with the request id and model: a generation error after an SSE stream started, and a 500.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { loadConfig } from '../../src/config.ts';
import { DEFAULT_MODEL_ID } from '../../src/engine/models/default-model.ts';
import { startServer, type RunningServer } from '../../src/server.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'localtune-failure-log-'));
const log: string[] = [];
let server: RunningServer;
let client: OpenAI;

before(async () => {
  server = await startServer(loadConfig(['--port', '0', '--data-dir', dataDir], {}), (line) => log.push(line));
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sk-local', maxRetries: 0 });
  // The model's generation fails as a lost device or a broken runner would, after the request was accepted.
  const served = await server.ctx.models.model(DEFAULT_MODEL_ID);
  served.scheduler.submit = () => Promise.reject(new Error('the device was lost'));
});
after(async () => {
  await server?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

test('a failure after the stream started is an error event for the client and a log line with the request id and model', async () => {
  const { data: stream, request_id } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream: true })
    .withResponse();
  const chunks: unknown[] = [];
  await assert.rejects(async () => {
    for await (const chunk of stream) chunks.push(chunk);
  }, (err: unknown) => err instanceof OpenAI.APIError && /server had an error/.test(err.message));
  assert.equal(chunks.length, 1, 'the role chunk went out before the failure');
  const line = log.find((l) => l.includes(request_id!));
  assert.ok(line, log.join('\n'));
  assert.match(line, /POST \/v1\/chat\/completions \(model gpt-4o-mini\) failed: Error: the device was lost/);
});

test('a 500 is logged with the request id and model too', async () => {
  const err = await client.completions.create({ model: DEFAULT_MODEL_ID, prompt: 'hi', max_tokens: 2 }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof OpenAI.InternalServerError);
  assert.match(log.find((l) => l.includes(err.requestID!)) ?? '', new RegExp(`POST /v1/completions \\(model ${DEFAULT_MODEL_ID}\\) failed: Error: the device was lost`));
});
