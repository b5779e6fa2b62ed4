// A 600 MiB file through the Uploads API with the official SDK: byte-identical, and the server's memory stays flat.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import OpenAI, { toStreamingFile } from 'openai';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
const FILE_BYTES = 600 * MiB;
const PART_BYTES = 64 * MiB;
/** The bound on the server's resident-memory growth while it takes and assembles the file. */
const MAX_RSS_GROWTH = 150 * MiB;

/**
 * The file's bytes, made on the fly and never held whole: 1 MiB blocks of seeded pseudo-random bytes, each block
 * stamped with its index, so a part sent twice or out of order changes the hash.
 */
async function* blocks(from: number, to: number): AsyncGenerator<Buffer> {
  const base = Buffer.alloc(MiB);
  let x = 0x9e3779b9;
  for (let i = 0; i < MiB; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    base.writeUInt32LE(x >>> 0, i);
  }
  for (let start = from; start < to; start += MiB) {
    const block = Buffer.from(base);
    block.writeUInt32LE(start / MiB, 0);
    yield block.subarray(0, Math.min(MiB, to - start));
  }
}

/** Resident memory of a process, from /proc (Linux): current and the peak since the last reset. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

let server: TestServer | undefined;
after(() => server?.stop());

test('600 MiB in 64 MiB parts (streamed, two at a time, sent out of order): same bytes back (md5 of the download), server RSS growth < 150 MiB', { skip: process.platform !== 'linux' && 'reads the server\'s memory from /proc' }, async () => {
  server = await startTestServer();
  const client: OpenAI = server.client();
  const expected = createHash('md5');
  for await (const block of blocks(0, FILE_BYTES)) expected.update(block);
  const md5 = expected.digest('hex');

  // Warm the routes once, then measure from a settled baseline with the peak counter reset (clear_refs 5).
  await client.uploads.cancel((await client.uploads.create({ bytes: 1, filename: 'w.bin', mime_type: 'application/octet-stream', purpose: 'user_data' })).id);
  const baseline = memory(server.pid).rss;
  writeFileSync(`/proc/${server.pid}/clear_refs`, '5');

  const t0 = performance.now();
  const upload = await client.uploads.create({ bytes: FILE_BYTES, filename: 'big.bin', mime_type: 'application/octet-stream', purpose: 'user_data' });
  const starts = Array.from({ length: Math.ceil(FILE_BYTES / PART_BYTES) }, (_, i) => i * PART_BYTES);
  const partIds: string[] = [];
  // Last part first, two in flight: arrival order differs from file order.
  const queue = starts.map((start, index) => ({ start, index })).reverse();
  const sendNext = async (): Promise<void> => {
    const next = queue.shift();
    if (!next) return;
    const data = toStreamingFile(blocks(next.start, Math.min(next.start + PART_BYTES, FILE_BYTES)), `part-${next.index}`);
    partIds[next.index] = (await client.uploads.parts.create(upload.id, { data })).id;
    await sendNext();
  };
  await Promise.all([sendNext(), sendNext()]);

  const t1 = performance.now();
  const done = await client.uploads.complete(upload.id, { part_ids: partIds, md5 });
  assert.equal(done.status, 'completed');
  assert.equal(done.file!.bytes, FILE_BYTES);

  const t2 = performance.now();
  const response = await client.files.content(done.file!.id);
  const actual = createHash('md5');
  for await (const chunk of response.body!) actual.update(chunk);
  const t3 = performance.now();
  const growth = memory(server.pid).peak - baseline;
  assert.equal(actual.digest('hex'), md5);
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  console.log(`600 MiB: parts ${s(t1 - t0)}, complete ${s(t2 - t1)}, download ${s(t3 - t2)}; server RSS baseline ${(baseline / MiB).toFixed(0)} MiB, peak growth ${(growth / MiB).toFixed(1)} MiB`);
  assert.ok(growth < MAX_RSS_GROWTH, `server RSS grew by ${(growth / MiB).toFixed(1)} MiB`);
});
