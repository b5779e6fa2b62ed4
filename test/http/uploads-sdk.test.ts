// Uploads API end to end through the official openai SDK: create, parts, complete, cancel, expiry, and each refusal.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import OpenAI, { toFile, toStreamingFile } from 'openai';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { openTestStore, runSql, storedBlobCount } from '../helpers/store.ts';

const ALPHA = 'sk-alpha-uploads';
const BETA = 'sk-beta-uploads';

let server: TestServer;
let client: OpenAI;

before(async () => {
  server = await startTestServer({ env: { LOCALTUNE_API_KEYS: `alpha:${ALPHA},beta:${BETA}` } });
  client = server.client(ALPHA);
});
after(() => server?.stop());

const partsOnDisk = () => storedBlobCount(server.dataDir, 'upload-parts');
const tempFiles = () => readdirSync(join(server.dataDir, 'tmp', 'uploads')).length;
const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');

const jsonl = Buffer.from(Array.from({ length: 40 }, (_, i) =>
  JSON.stringify({ messages: [{ role: 'user', content: `question ${i} ü` }, { role: 'assistant', content: `answer ${i}` }] }) + '\n').join(''));

/** A pending upload of `content` with its parts stored (sent in parallel, split at `cuts`); the parts are returned in file order. */
async function uploadInParts(content: Buffer, cuts: number[], params: Partial<OpenAI.Uploads.UploadCreateParams> = {}) {
  const upload = await client.uploads.create({ bytes: content.length, filename: 'train.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune', ...params });
  const bounds = [0, ...cuts, content.length];
  const slices = bounds.slice(1).map((end, i) => content.subarray(bounds[i], end));
  // Sent last part first, all at once: the order of arrival must not matter, only part_ids' order.
  const parts = await Promise.all(slices.map(async (slice, i) => client.uploads.parts.create(upload.id, { data: await toFile(slice, `part${i}`) })).reverse());
  return { upload, parts: parts.reverse() };
}

/** Asserts `promise` is refused with an APIError of `status` whose param (and message) match. */
async function refused(promise: Promise<unknown>, status: number, param: string | null, message?: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.status, status, err.message);
    assert.equal(err.param ?? null, param, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

test('create, parts in parallel, complete in part_ids order with md5: the File is an ordinary File with the same bytes', async () => {
  const created = await client.uploads.create({ bytes: jsonl.length, filename: 'train.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune' });
  assert.match(created.id, /^upload_[A-Za-z0-9]{24}$/);
  assert.equal(created.object, 'upload');
  assert.equal(created.status, 'pending');
  assert.equal(created.bytes, jsonl.length);
  assert.equal(created.filename, 'train.jsonl');
  assert.equal(created.purpose, 'fine-tune');
  assert.equal(created.expires_at, created.created_at + 3600);
  assert.equal(created.file, null);
  await client.uploads.cancel(created.id);

  // Cuts fall inside lines and inside the multi-byte ü, so only the exact order rebuilds valid JSONL.
  const ü = jsonl.indexOf(Buffer.from('ü'));
  const { upload, parts } = await uploadInParts(jsonl, [ü + 1, 1000, 2000]);
  for (const part of parts) {
    assert.match(part.id, /^part_[A-Za-z0-9]{24}$/);
    assert.equal(part.object, 'upload.part');
    assert.equal(part.upload_id, upload.id);
    assert.equal(typeof part.created_at, 'number');
  }
  assert.equal(await partsOnDisk(), 4);
  const done = await client.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id), md5: md5(jsonl) });
  assert.equal(done.status, 'completed');
  assert.equal(done.id, upload.id);
  const file = done.file!;
  assert.match(file.id, /^file-[A-Za-z0-9]{24}$/);
  assert.equal(file.bytes, jsonl.length);
  assert.equal(file.filename, 'train.jsonl');
  assert.equal(file.purpose, 'fine-tune');
  assert.equal(file.status, 'processed');
  assert.deepEqual(await client.files.retrieve(file.id), file);
  const downloaded = Buffer.from(await (await client.files.content(file.id)).arrayBuffer());
  assert.ok(downloaded.equals(jsonl));
  assert.equal(await partsOnDisk(), 0);
  assert.equal(tempFiles(), 0);
});

test('the File keeps expires_after, and parts may be left out of part_ids', async () => {
  const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31) % 256));
  const upload = await client.uploads.create({ bytes: 3000, filename: 'blob.bin', mime_type: 'application/octet-stream', purpose: 'user_data', expires_after: { anchor: 'created_at', seconds: 7200 } });
  const first = await client.uploads.parts.create(upload.id, { data: await toFile(data.subarray(0, 3000), 'a') });
  const unused = await client.uploads.parts.create(upload.id, { data: await toFile(data.subarray(3000), 'b') });
  const done = await client.uploads.complete(upload.id, { part_ids: [first.id] });
  assert.equal(done.file!.expires_at, done.file!.created_at + 7200);
  assert.equal(done.file!.purpose, 'user_data');
  assert.ok(Buffer.from(await (await client.files.content(done.file!.id)).arrayBuffer()).equals(data.subarray(0, 3000)));
  // The unused part went with the completion.
  await refused(client.uploads.complete(upload.id, { part_ids: [unused.id] }), 400, null, /already completed/);
  assert.equal(await partsOnDisk(), 0);
});

test('complete refuses a wrong total, unknown or repeated part ids and a wrong md5, and leaves the upload pending', async () => {
  const { upload, parts } = await uploadInParts(jsonl, [1500]);
  const [a, b] = parts.map((p) => p.id) as [string, string];
  await refused(client.uploads.complete(upload.id, { part_ids: [a] }), 400, 'part_ids', new RegExp(`add up to 1500 bytes, but Upload ${upload.id} was created with bytes=${jsonl.length}`));
  await refused(client.uploads.complete(upload.id, { part_ids: [a, 'part_nope'] }), 400, 'part_ids[1]', /'part_nope' is not a part of/);
  const other = await uploadInParts(Buffer.from('{}\n'), [], { filename: 'other.jsonl' });
  await refused(client.uploads.complete(upload.id, { part_ids: [a, other.parts[0]!.id] }), 400, 'part_ids[1]', /is not a part of/);
  await refused(client.uploads.complete(upload.id, { part_ids: [a, a] }), 400, 'part_ids[1]', /listed twice/);
  await refused(client.uploads.complete(upload.id, { part_ids: [a, b], md5: md5(Buffer.from('something else')) }), 400, 'md5', new RegExp(`md5 of the assembled file is ${md5(jsonl)}`));
  await refused(client.uploads.complete(upload.id, { part_ids: [a, b], md5: createHash('md5').update(jsonl).digest('base64') }), 400, 'md5', /must match pattern/);
  // Parts in the wrong order: the right size, but the content is no longer JSONL; checked as POST /v1/files checks it.
  await refused(client.uploads.complete(upload.id, { part_ids: [b, a] }), 400, null, /Invalid file format for Fine-Tuning API: line 1: line is not valid JSON/);
  assert.equal(tempFiles(), 0);
  // Still pending after every refusal: the right list completes it.
  const done = await client.uploads.complete(upload.id, { part_ids: [a, b], md5: md5(jsonl).toUpperCase() });
  assert.equal(done.status, 'completed');
  await client.uploads.cancel(other.upload.id);
});

test('a completed or cancelled upload takes no more parts, completions or cancels', async () => {
  const { upload, parts } = await uploadInParts(jsonl, []);
  await client.uploads.complete(upload.id, { part_ids: [parts[0]!.id] });
  const part = async () => ({ data: await toFile(Buffer.from('{}\n'), 'p') });
  await refused(client.uploads.complete(upload.id, { part_ids: [parts[0]!.id] }), 400, null, new RegExp(`Cannot complete Upload ${upload.id}: it is already completed`));
  await refused(client.uploads.parts.create(upload.id, await part()), 400, null, /Cannot add parts to Upload .*: it is already completed/);
  await refused(client.uploads.cancel(upload.id), 400, null, /Cannot cancel Upload .*: it is already completed/);

  const second = await uploadInParts(jsonl, [10]);
  assert.equal(await partsOnDisk(), 2);
  const cancelled = await client.uploads.cancel(second.upload.id);
  assert.equal(cancelled.status, 'cancelled');
  assert.equal(cancelled.file, null);
  assert.equal(await partsOnDisk(), 0);
  // Refused before the body is read, yet answered (not a reset connection) while a large part is still being sent.
  const large = await toFile(Buffer.alloc(16 * 1024 * 1024, 1), 'large');
  await refused(client.uploads.parts.create(second.upload.id, { data: large }), 400, null, /it was already cancelled/);
  await refused(client.uploads.parts.create(second.upload.id, { data: toStreamingFile(Readable.from([Buffer.alloc(16 * 1024 * 1024, 2)]), 'streamed') }), 400, null, /it was already cancelled/);
  await refused(client.uploads.complete(second.upload.id, { part_ids: second.parts.map((p) => p.id) }), 400, null, /it was already cancelled/);
  await refused(client.uploads.cancel(second.upload.id), 400, null, /it was already cancelled/);
  assert.equal(tempFiles(), 0);
});

test('bad create parameters, a missing or oversize part, and unknown ids are refused naming the field', async () => {
  const create = (params: Partial<OpenAI.Uploads.UploadCreateParams>) =>
    client.uploads.create({ bytes: 10, filename: 'a.jsonl', mime_type: 'text/jsonl', purpose: 'fine-tune', ...params });
  await refused(create({ filename: 'notes.txt' }), 400, 'filename', /Must be \.jsonl/);
  await refused(create({ bytes: 8 * 1024 ** 3 + 1 }), 400, 'bytes', /must be <= 8589934592/);
  await refused(create({ bytes: 0 }), 400, 'bytes');
  await refused(create({ purpose: 'fine-tune-results' as 'fine-tune' }), 400, 'purpose');
  await refused(create({ expires_after: { anchor: 'created_at', seconds: 60 } }), 400, 'expires_after.seconds');

  const upload = await create({});
  const postForm = async (form: FormData) => {
    const r = await fetch(`${server.baseURL}/uploads/${upload.id}/parts`, { method: 'POST', headers: { authorization: `Bearer ${ALPHA}` }, body: form });
    return { status: r.status, error: ((await r.json()) as { error: { param: string; message: string } }).error };
  };
  const missing = await postForm(new FormData());
  assert.equal(missing.status, 400);
  assert.equal(missing.error.param, 'data');
  const text = new FormData();
  text.set('data', 'not a file');
  const asText = await postForm(text);
  assert.equal(asText.status, 400);
  assert.match(asText.error.message, /'data' must be a file part/);

  // One byte over 64 MiB: refused while it streams, with nothing left on disk.
  const big = Buffer.alloc(64 * 1024 * 1024 + 1, 7);
  await refused(client.uploads.parts.create(upload.id, { data: await toFile(big, 'big') }), 413, 'data', /at most 64 MiB/);
  assert.equal(await partsOnDisk(), 0);
  assert.equal(tempFiles(), 0);

  await refused(client.uploads.parts.create('upload_nope', { data: await toFile(Buffer.from('x'), 'p') }), 404, 'upload_id', /No such Upload object: upload_nope/);
  await refused(client.uploads.complete('upload_nope', { part_ids: [] }), 404, 'upload_id');
  await refused(client.uploads.cancel('upload_nope'), 404, 'upload_id');
  await client.uploads.cancel(upload.id);
});

test("another project's upload is a 404 for parts, complete and cancel", async () => {
  const { upload, parts } = await uploadInParts(jsonl, [100]);
  const beta = server.client(BETA);
  await refused(beta.uploads.parts.create(upload.id, { data: await toFile(Buffer.from('{}\n'), 'p') }), 404, 'upload_id', /No such Upload object/);
  await refused(beta.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) }), 404, 'upload_id');
  await refused(beta.uploads.cancel(upload.id), 404, 'upload_id');
  const done = await client.uploads.complete(upload.id, { part_ids: parts.map((p) => p.id) });
  await refused(beta.files.retrieve(done.file!.id), 404, 'id');
});

test('an expired upload refuses parts and completion; its parts are swept, and a completion cut off by a crash is pending again', async () => {
  const expiring = await uploadInParts(jsonl, [100]);
  const interrupted = await uploadInParts(jsonl, [200]);
  await runSql(server.dataDir, 'UPDATE uploads SET expires_at = created_at - 1 WHERE id = ?', [expiring.upload.id]);
  await refused(client.uploads.parts.create(expiring.upload.id, { data: await toFile(Buffer.from('{}\n'), 'p') }), 400, null, /it expired at .* create a new one/);
  await refused(client.uploads.complete(expiring.upload.id, { part_ids: expiring.parts.map((p) => p.id) }), 400, null, /it expired/);
  await refused(client.uploads.cancel(expiring.upload.id), 400, null, /it expired/);

  // A crash in the middle of a completion: the database says 'completing' and half a file sits in the temp folder.
  await server.kill();
  const store = await openTestStore(server.dataDir);
  try {
    assert.equal(await store.uploads.beginCompletion(interrupted.upload.id), true);
  } finally {
    await store.close();
  }
  await server.restart();
  assert.match(server.output(), /2 part\(s\) of finished or expired Uploads, 0 orphaned part\(s\); 1 interrupted Upload completion\(s\) set back to pending/);
  assert.equal(await partsOnDisk(), 2);
  const done = await client.uploads.complete(interrupted.upload.id, { part_ids: interrupted.parts.map((p) => p.id) });
  assert.ok(Buffer.from(await (await client.files.content(done.file!.id)).arrayBuffer()).equals(jsonl));
  assert.equal(await partsOnDisk(), 0);
});
