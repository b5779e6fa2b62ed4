// Files API end to end through the official openai SDK against the real server process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { DEFAULT_MAX_LINE_BYTES } from '../../src/datasets/jsonl-reader.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const lines = (n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `q${i} ü` }, { role: 'assistant', content: `a${i}` }] })).join('\n') + '\n';

let server: TestServer;
let client: OpenAI;
const scratch = mkdtempSync(join(tmpdir(), 'localtune-files-sdk-'));

before(async () => {
  server = await startTestServer();
  client = server.client();
});
after(() => server?.stop());

test('upload with fs.createReadStream (streamed, chunked, file part first), retrieve, download byte-identical, delete', async () => {
  const path = join(scratch, 'train.jsonl');
  const content = lines(50);
  writeFileSync(path, content);
  const file = await client.files.create({ file: createReadStream(path), purpose: 'fine-tune' });
  assert.match(file.id, /^file-[A-Za-z0-9]{24}$/);
  assert.equal(file.object, 'file');
  assert.equal(file.bytes, Buffer.byteLength(content));
  assert.equal(file.filename, 'train.jsonl');
  assert.equal(file.purpose, 'fine-tune');
  assert.equal(file.status, 'processed');
  assert.equal(file.expires_at, null);

  assert.deepEqual(await client.files.retrieve(file.id), file);
  assert.equal((await client.files.waitForProcessing(file.id, { pollInterval: 10 })).status, 'processed');

  const downloaded = Buffer.from(await (await client.files.content(file.id)).arrayBuffer());
  assert.ok(downloaded.equals(Buffer.from(content)));

  assert.deepEqual(await client.files.delete(file.id), { id: file.id, object: 'file', deleted: true });
  await assert.rejects(client.files.retrieve(file.id), OpenAI.NotFoundError);
});

test('upload with toFile (buffered, Content-Length) keeps binary bytes exactly', async () => {
  const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37) % 256));
  const file = await client.files.create({ file: await toFile(bytes, 'blob.bin'), purpose: 'user_data' });
  assert.equal(file.bytes, bytes.length);
  const downloaded = Buffer.from(await (await client.files.content(file.id)).arrayBuffer());
  assert.ok(downloaded.equals(bytes));
});

test('expires_after arrives as bracketed multipart fields and sets expires_at', async () => {
  const file = await client.files.create({ file: await toFile(Buffer.from('{}\n'), 'e.jsonl'), purpose: 'batch', expires_after: { anchor: 'created_at', seconds: 3600 } });
  assert.equal(file.expires_at, file.created_at + 3600);
  const tooShort = client.files.create({ file: await toFile(Buffer.from('{}\n'), 'e.jsonl'), purpose: 'batch', expires_after: { anchor: 'created_at', seconds: 60 } });
  await assert.rejects(tooShort, (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === 'expires_after.seconds');
  await client.files.delete(file.id);
});

test('list pages with after/limit until has_more is false, newest first, filtered by purpose', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push((await client.files.create({ file: await toFile(Buffer.from(lines(1)), `p${i}.jsonl`), purpose: 'batch' })).id);
  }
  const seen: string[] = [];
  let page = await client.files.list({ purpose: 'batch', limit: 2 });
  const pageSizes = [page.data.length];
  seen.push(...page.data.map((f) => f.id));
  while (page.hasNextPage()) {
    page = await page.getNextPage();
    pageSizes.push(page.data.length);
    seen.push(...page.data.map((f) => f.id));
  }
  assert.deepEqual(seen, [...ids].reverse());
  assert.deepEqual(pageSizes, [2, 2, 1]);

  const raw = await client.files.list({ purpose: 'batch', limit: 2, order: 'asc' });
  assert.deepEqual(raw.data.map((f) => f.id), ids.slice(0, 2));
  const body = (await client.files.list({ purpose: 'batch', limit: 2, order: 'asc' }).withResponse()).data;
  assert.equal(body.has_more, true);

  const all: string[] = [];
  for await (const f of client.files.list({ purpose: 'batch', limit: 3 })) all.push(f.id);
  assert.equal(all.length, 5);
});

test('fine-tune uploads follow the training reader: a BOM+CRLF file is accepted, an over-long or non-UTF-8 line is a 400 naming it', async () => {
  const windows = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(lines(3).replace(/\n/g, '\r\n'))]);
  const file = await client.files.create({ file: await toFile(windows, 'excel-export.jsonl'), purpose: 'fine-tune' });
  assert.equal(file.bytes, windows.length);
  assert.ok(Buffer.from(await (await client.files.content(file.id)).arrayBuffer()).equals(windows));

  const long = Buffer.from(`{"a":1}\n{"b":"${'x'.repeat(DEFAULT_MAX_LINE_BYTES)}"}\n`);
  await assert.rejects(client.files.create({ file: await toFile(long, 'long.jsonl'), purpose: 'fine-tune' }), (err: unknown) =>
    err instanceof OpenAI.BadRequestError && err.param === 'file' && /line 2: line is longer than/.test(err.message));
  const latin1 = Buffer.concat([Buffer.from('{"a":1}\n{"b":"caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]);
  await assert.rejects(client.files.create({ file: await toFile(latin1, 'latin1.jsonl'), purpose: 'fine-tune' }), (err: unknown) =>
    err instanceof OpenAI.BadRequestError && /line 2: line is not valid UTF-8/.test(err.message));
});

test('bad purpose, malformed fine-tune JSONL and unknown ids map to the SDK error classes', async () => {
  const bad = client.files.create({ file: await toFile(Buffer.from('{}\n'), 'x.jsonl'), purpose: 'nonsense' as 'batch' });
  await assert.rejects(bad, (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === 'purpose');

  const notJsonl = client.files.create({ file: await toFile(Buffer.from('{}\n'), 'x.txt'), purpose: 'fine-tune' });
  await assert.rejects(notJsonl, (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === 'file');

  const badLine = client.files.create({ file: await toFile(Buffer.from('{"a":1}\n\n[1,2]\n'), 'x.jsonl'), purpose: 'fine-tune' });
  await assert.rejects(badLine, (err: unknown) => err instanceof OpenAI.BadRequestError && /line 3\b/.test(err.message));

  await assert.rejects(client.files.retrieve('file-doesnotexist000000000000'), (err: unknown) =>
    err instanceof OpenAI.NotFoundError && err.param === 'id' && typeof err.requestID === 'string' && err.requestID.startsWith('req_'));
  await assert.rejects(client.files.delete('file-doesnotexist000000000000'), OpenAI.NotFoundError);
  await assert.rejects(client.files.content('file-doesnotexist000000000000'), OpenAI.NotFoundError);
  await assert.rejects(client.files.list({ limit: 0 }), (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === 'limit');
});
