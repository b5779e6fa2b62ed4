// Raw-HTTP multipart edge cases for POST /v1/files, plus durability across a crash mid-upload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { waitFor } from '../helpers/wait.ts';

const BOUNDARY = 'lt-test-boundary-7f3a';
const MAX_UPLOAD_MB = 1;

function filePart(name: string, filename: string, content: string | Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    Buffer.from(content),
    Buffer.from('\r\n'),
  ]);
}
const field = (name: string, value: string) => Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
const end = Buffer.from(`--${BOUNDARY}--\r\n`);

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; json: any }

/** POSTs the body to /v1/files, either with Content-Length or chunked in pieces of `chunkSize`. */
function post(server: TestServer, body: Buffer, opts: { chunked?: boolean; chunkSize?: number } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, authorization: 'Bearer x' };
    if (!opts.chunked) headers['content-length'] = String(body.length);
    const req = request(`${server.baseURL}/files`, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, json: JSON.parse(Buffer.concat(chunks).toString()) }));
    });
    req.on('error', reject);
    const size = opts.chunkSize ?? 64 * 1024;
    for (let i = 0; i < body.length; i += size) req.write(body.subarray(i, i + size));
    req.end();
  });
}

const blobCount = (server: TestServer) => readdirSync(join(server.dataDir, 'files')).length;
const tempCount = (server: TestServer) => readdirSync(join(server.dataDir, 'tmp', 'uploads')).length;

let server: TestServer;
before(async () => {
  server = await startTestServer({ env: { LOCALTUNE_MAX_UPLOAD_MB: String(MAX_UPLOAD_MB) } });
});
after(() => server?.stop());

test('file part before purpose, sent chunked without Content-Length', async () => {
  const body = Buffer.concat([filePart('file', 'first.jsonl', '{"x":1}\n{"x":2}\n'), field('purpose', 'fine-tune'), end]);
  const r = await post(server, body, { chunked: true, chunkSize: 7 });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.filename, 'first.jsonl');
  assert.equal(r.json.bytes, 16);
  assert.match(String(r.headers['x-request-id']), /^req_/);
});

test('oversize upload is a 413 envelope and leaves no partial file behind', async () => {
  const before = blobCount(server);
  const big = Buffer.alloc(MAX_UPLOAD_MB * 1024 * 1024 + 1, 'a');
  for (const chunked of [false, true]) {
    const r = await post(server, Buffer.concat([field('purpose', 'user_data'), filePart('file', 'big.bin', big), end]), { chunked });
    assert.equal(r.status, 413);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.equal(r.json.error.param, 'file');
  }
  const exact = await post(server, Buffer.concat([field('purpose', 'user_data'), filePart('file', 'exact.bin', big.subarray(1)), end]));
  assert.equal(exact.status, 200);
  assert.equal(blobCount(server), before + 1);
  assert.equal(tempCount(server), 0);
});

test('missing file part and two file parts are 400s naming `file`', async () => {
  const missing = await post(server, Buffer.concat([field('purpose', 'fine-tune'), end]));
  assert.equal(missing.status, 400);
  assert.equal(missing.json.error.param, 'file');

  const two = await post(server, Buffer.concat([filePart('file', 'a.jsonl', '{}\n'), filePart('file', 'b.jsonl', '{}\n'), field('purpose', 'fine-tune'), end]));
  assert.equal(two.status, 400);
  assert.equal(two.json.error.param, 'file');

  const unknownField = await post(server, Buffer.concat([filePart('file', 'a.jsonl', '{}\n'), field('purpose', 'fine-tune'), field('colour', 'red'), end]));
  assert.equal(unknownField.status, 400);
  assert.equal(unknownField.json.error.param, 'colour');
  await waitFor('the refused uploads\' temp files to be removed', () => tempCount(server) === 0);
});

test('UTF-8 filenames arrive intact', async () => {
  const r = await post(server, Buffer.concat([filePart('file', 'données ü 日本.jsonl', '{}\n'), field('purpose', 'fine-tune'), end]));
  assert.equal(r.status, 200);
  assert.equal(r.json.filename, 'données ü 日本.jsonl');
});

test('a filename with ../ is reduced to its base name and never used as a path', async () => {
  const before = blobCount(server);
  const r = await post(server, Buffer.concat([field('purpose', 'user_data'), filePart('file', '../../escape.txt', 'data'), end]));
  assert.equal(r.status, 200);
  // busboy keeps only the last path segment; the blob is named by the file id regardless.
  assert.equal(r.json.filename, 'escape.txt');
  assert.deepEqual(readdirSync(join(server.dataDir, 'files')).filter((n) => !n.startsWith('file-')), []);
  assert.equal(blobCount(server), before + 1);
  assert.ok(!readdirSync(server.dataDir).includes('escape.txt'));
  const content = await fetch(`${server.baseURL}/files/${r.json.id}/content`);
  assert.equal(await content.text(), 'data');
});

test('a crash mid-upload leaves neither a row nor a blob after restart', async () => {
  const rowsBefore = (await server.client().files.list()).data.length;
  const blobsBefore = blobCount(server);
  const req = request(`${server.baseURL}/files`, { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` } });
  req.on('error', () => {});
  req.write(Buffer.concat([field('purpose', 'user_data'), filePart('file', 'half.bin', Buffer.alloc(200_000, 'b')).subarray(0, 100_000)]));
  await waitFor('the upload to stream into a temp file', () => tempCount(server) === 1);
  await server.kill('SIGKILL');
  req.destroy();
  await server.restart();
  assert.equal(tempCount(server), 0);
  assert.equal(blobCount(server), blobsBefore);
  assert.equal((await server.client().files.list()).data.length, rowsBefore);
});
