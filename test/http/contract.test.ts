// The contract as served: every operation validates its input before its handler, and errors use the envelope.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openapi } from '../../src/contract.ts';
import { loadConfig } from '../../src/config.ts';
import { startServer, type RunningServer } from '../../src/server.ts';
import { validate, type OperationId } from '../../src/http/validation.ts';

let server: RunningServer;
let dataDir: string;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'localtune-contract-'));
  server = await startServer(loadConfig(['--port', '0', '--data-dir', dataDir], {}), () => {});
});
after(async () => {
  await server?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const type = res.headers.get('content-type');
  return { status: res.status, requestId: res.headers.get('x-request-id'), type, json: (type?.includes('json') ? await res.json() : null) as any };
}

function assertEnvelope(json: any) {
  assert.deepEqual(Object.keys(json), ['error']);
  assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof json.error.message, 'string');
}

test('every operation in openapi.yaml has a compilable validator', () => {
  const ids = Object.values(openapi.paths).flatMap((item) => Object.values(item).map((op: any) => op?.operationId).filter(Boolean));
  const surface = ['createFile', 'listFiles', 'retrieveFile', 'downloadFile', 'deleteFile', 'createFineTuningJob', 'listFineTuningJobs',
    'retrieveFineTuningJob', 'cancelFineTuningJob', 'pauseFineTuningJob', 'resumeFineTuningJob', 'listFineTuningEvents',
    'listFineTuningJobCheckpoints', 'listModels', 'retrieveModel', 'deleteModel', 'createChatCompletion', 'createCompletion'];
  assert.deepEqual(surface.filter((id) => !ids.includes(id)), []);
  for (const id of ids) assert.equal(typeof validate(id as OperationId), 'function', id);
  assert.throws(() => validate('noSuchOperation' as OperationId), /no operation 'noSuchOperation'/);
});

test('every operation in openapi.yaml is answered by a router', async () => {
  for (const [path, item] of Object.entries(openapi.paths)) {
    for (const method of Object.keys(item).filter((m) => ['get', 'post', 'put', 'patch', 'delete'].includes(m))) {
      // A path with its own `servers` (GET /metrics) lives beside /v1.
      const base = item.servers ? new URL(item.servers[0].url).pathname.replace(/\/$/, '') : '/v1';
      const url = `${base}${path.replace(/\{[^}]+\}/g, 'unknown-id')}`;
      const r = await call(method.toUpperCase(), url, method === 'post' ? {} : undefined);
      assert.notEqual(r.json?.error?.code, 'unknown_url', `${method.toUpperCase()} ${url} reached no router`);
      assert.ok(r.status < 500, `${method.toUpperCase()} ${url} answered ${r.status}`);
    }
  }
});

test('input is validated before the handler, and every answer uses the envelope', async () => {
  // Valid by the schema, refused by the handler (no such model).
  const ok = await call('POST', '/v1/fine_tuning/jobs', { model: 'm', training_file: 'file-x' });
  assert.equal(ok.status, 400);
  assert.equal(ok.json.error.code, 'model_not_available');
  assertEnvelope(ok.json);
  assert.match(ok.requestId ?? '', /^req_[0-9a-f]{32}$/);
  assert.match(ok.type ?? '', /application\/json/);

  const unknown = await call('POST', '/v1/fine_tuning/jobs', { model: 'm', training_file: 'file-x', colour: 'red' });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.json.error.param, 'colour');

  const range = await call('POST', '/v1/fine_tuning/jobs', { model: 'm', training_file: 'f', method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 51 } } } });
  assert.equal(range.status, 400);
  assert.equal(range.json.error.param, 'method.supervised.hyperparameters.n_epochs');
  // "auto" or a number: the message speaks of the branch the value's type fits, or lists the types.
  assert.match(range.json.error.message, /must be <= 50/);
  const wrongBranch = await call('POST', '/v1/fine_tuning/jobs', { model: 'm', training_file: 'f', hyperparameters: { batch_size: true } });
  assert.equal(wrongBranch.json.error.message, "Invalid value for 'hyperparameters.batch_size': must be string or integer.");

  const missing = await call('POST', '/v1/chat/completions', { model: 'm' });
  assert.equal(missing.status, 400);
  assert.equal(missing.json.error.param, 'messages');
  assert.equal(missing.json.error.type, 'invalid_request_error');

  const wrongType = await call('POST', '/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 'hot' });
  assert.equal(wrongType.status, 400);
  assert.equal(wrongType.json.error.param, 'temperature');

  const nested = await call('POST', '/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: 'hi' }, { role: 'robot', content: 'x' }] });
  assert.equal(nested.status, 400);
  assert.equal(nested.json.error.param, 'messages[1].role');

  const query = await call('GET', '/v1/fine_tuning/jobs?limit=0');
  assert.equal(query.status, 400);
  assert.equal(query.json.error.param, 'limit');
  assert.equal((await call('GET', '/v1/fine_tuning/jobs?metadata%5Bteam%5D=a&limit=5')).status, 200);
});

test('model ids with colons route, and Python-style empty JSON bodies are accepted', async () => {
  // Routed to the models router (the id is unknown there), not to the unknown-URL handler.
  for (const path of ['/v1/models/ft:base:org:suffix:abc12345', '/v1/models/ft%3Abase%3Aorg%3A%3Aabc12345']) {
    const r = await call('GET', path);
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'model_not_found');
  }
  assert.equal((await call('POST', '/v1/fine_tuning/jobs/ftjob-x/cancel', '')).status, 404);
});

test('unknown routes, bad JSON and oversized JSON use the envelope', async () => {
  const nope = await call('GET', '/v1/nope');
  assert.equal(nope.status, 404);
  assertEnvelope(nope.json);
  assert.ok(nope.requestId);
  const root = await call('GET', '/');
  assert.equal(root.status, 404);

  const badJson = await call('POST', '/v1/chat/completions', '{"model": ');
  assert.equal(badJson.status, 400);
  assertEnvelope(badJson.json);

  const big = await call('POST', '/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: 'x'.repeat(17 * 1024 * 1024) }] });
  assert.equal(big.status, 413);
  assertEnvelope(big.json);
});
