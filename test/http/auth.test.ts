// API keys end to end: open mode without keys, 401 without a valid key, projects isolated (other ids are 404).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { createKey, runCli, startTestServer } from '../helpers/server.ts';

test('without keys the server is open on 127.0.0.1 and says so', async () => {
  const server = await startTestServer({ args: ['--host', '0.0.0.0'] });
  try {
    assert.match(server.output(), /no API keys configured: accepting any bearer token/);
    assert.match(server.output(), /refusing to listen on 0\.0\.0\.0/);
    assert.equal(new URL(server.url).hostname, '127.0.0.1');
    const list = await server.client('anything-at-all').files.list();
    assert.deepEqual(list.data, []);
  } finally {
    await server.stop();
  }
});

test('with keys every /v1 request needs a valid key, and projects do not see each other', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-auth-'));
  const alphaKey = await createKey(dataDir, 'alpha');
  const betaKey = await createKey(dataDir, 'beta');
  const s = await startTestServer({ dataDir });
  try {
    assert.doesNotMatch(s.output(), /accepting any bearer token/);
    const alpha = s.client(alphaKey);
    const beta = s.client(betaKey);

    await assert.rejects(s.client('sk-wrong-key-123456').files.list(), (err: unknown) =>
      err instanceof OpenAI.AuthenticationError && err.code === 'invalid_api_key');
    const noKey = await fetch(`${s.baseURL}/files`);
    assert.equal(noKey.status, 401);
    assert.ok(noKey.headers.get('x-request-id'));
    assert.equal(((await noKey.json()) as { error: { type: string } }).error.type, 'invalid_request_error');

    const file = await alpha.files.create({ file: await toFile(Buffer.from('{"a":1}\n'), 'a.jsonl'), purpose: 'fine-tune' });
    assert.equal((await alpha.files.retrieve(file.id)).id, file.id);
    await assert.rejects(beta.files.retrieve(file.id), OpenAI.NotFoundError);
    await assert.rejects(beta.files.content(file.id), OpenAI.NotFoundError);
    await assert.rejects(beta.files.delete(file.id), OpenAI.NotFoundError);
    assert.deepEqual((await beta.files.list()).data, []);
    await assert.rejects(beta.files.list({ after: file.id }), OpenAI.BadRequestError);

    // Revoking takes effect on the running server.
    const keyId = (await runCli(['keys', 'list', '--data-dir', dataDir])).split('\n').find((l) => l.includes('\tbeta\t'))!.split('\t')[0]!;
    await runCli(['keys', 'revoke', keyId, '--data-dir', dataDir]);
    await assert.rejects(beta.files.list(), OpenAI.AuthenticationError);
    assert.equal((await alpha.files.list()).data.length, 1);
  } finally {
    await s.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('keys given in LOCALTUNE_API_KEYS work like created ones', async () => {
  const s = await startTestServer({ env: { LOCALTUNE_API_KEYS: 'gamma:sk-gamma-key-0001, delta:sk-delta-key-0002' } });
  try {
    assert.doesNotMatch(s.output(), /accepting any bearer token/);
    const file = await s.client('sk-gamma-key-0001').files.create({ file: await toFile(Buffer.from('x'), 'x.txt'), purpose: 'user_data' });
    await assert.rejects(s.client('sk-delta-key-0002').files.retrieve(file.id), OpenAI.NotFoundError);
    await assert.rejects(s.client('sk-gamma-key-0003').files.list(), OpenAI.AuthenticationError);
  } finally {
    await s.stop();
  }
});

test('a server listening beyond loopback never runs open: revoking its last key leaves it refusing every request, and it says so', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-auth-'));
  const key = await createKey(dataDir, 'alpha');
  const s = await startTestServer({ dataDir, args: ['--host', '0.0.0.0'] });
  try {
    assert.equal(new URL(s.url).hostname, '0.0.0.0');
    assert.deepEqual((await s.client(key).files.list()).data, []);
    const keyId = (await runCli(['keys', 'list', '--data-dir', dataDir])).split('\n').find((l) => l.includes('\talpha\t'))!.split('\t')[0]!;
    await runCli(['keys', 'revoke', keyId, '--data-dir', dataDir]);

    for (const token of [key, 'anything-at-all']) {
      await assert.rejects(s.client(token).files.list(), (err: unknown) => err instanceof OpenAI.AuthenticationError && /no active API keys/.test(err.message));
    }
    assert.equal((await fetch(`${s.baseURL}/models`)).status, 401);
    assert.match(s.output(), /no active API keys left: refusing every \/v1 request/);

    // A new key opens it again for that key only.
    const next = await createKey(dataDir, 'beta');
    assert.deepEqual((await s.client(next).files.list()).data, []);
    await assert.rejects(s.client('anything-at-all').files.list(), OpenAI.AuthenticationError);
  } finally {
    await s.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
