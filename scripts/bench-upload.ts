// Upload benchmark: streams a large file through the openai SDK into a real server; prints MB/s and the server's peak RSS growth.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const MB = 1024 * 1024;
const sizeMb = Number(process.env.BENCH_UPLOAD_MB ?? 300);
const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/** Resident and peak-resident memory of a process, in bytes (Linux /proc). */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Resets the kernel's peak-RSS mark (VmHWM) so the peak measured is the benchmark's own. */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

/** Writes `sizeMb` of JSONL-looking lines without holding them in memory; returns its size and sha256. */
async function makeFile(path: string): Promise<{ bytes: number; sha: string }> {
  const out = createWriteStream(path);
  const hash = createHash('sha256');
  const line = Buffer.from(JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(900) }, { role: 'assistant', content: 'y'.repeat(60) }] }) + '\n');
  let bytes = 0;
  for (; bytes < sizeMb * MB; bytes += line.length) {
    hash.update(line);
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return { bytes, sha: hash.digest('hex') };
}

const dir = mkdtempSync(join(tmpdir(), 'localtune-bench-upload-'));
const server = spawn(process.execPath, [join(repoRoot, 'bin/localtune.js'), 'serve', '--port', '0', '--data-dir', join(dir, 'data'), '--max-upload-mb', String(sizeMb * 2)], { stdio: ['ignore', 'pipe', 'inherit'] });
try {
  const url = await new Promise<string>((resolve, reject) => {
    let text = '';
    server.stdout.on('data', (c: Buffer) => {
      text += c.toString();
      const m = /localtune listening on (\S+)/.exec(text);
      if (m) resolve(m[1]!);
    });
    server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  const path = join(dir, 'big.jsonl');
  const made = await makeFile(path);
  const client = new OpenAI({ apiKey: 'bench', baseURL: `${url}/v1`, maxRetries: 0 });

  // Warm up (JIT, first SQLite writes) before the baseline.
  await client.files.list();
  resetPeak(server.pid!);
  const base = memory(server.pid!);
  const t0 = performance.now();
  const file = await client.files.create({ file: createReadStream(path), purpose: 'fine-tune' });
  const uploadS = (performance.now() - t0) / 1000;
  const afterUpload = memory(server.pid!);

  // The same bytes as `user_data` skip the fine-tune line check: the difference is its cost.
  const t2 = performance.now();
  await client.files.create({ file: createReadStream(path), purpose: 'user_data' });
  const plainS = (performance.now() - t2) / 1000;

  const t1 = performance.now();
  const body = (await client.files.content(file.id)).body!;
  const downHash = createHash('sha256');
  for await (const chunk of body) downHash.update(chunk as Uint8Array);
  const downloadS = (performance.now() - t1) / 1000;
  const after = memory(server.pid!);

  if (file.bytes !== made.bytes || downHash.digest('hex') !== made.sha) throw new Error('downloaded content differs from the upload');
  const mbPerS = (s: number) => (file.bytes / MB / s).toFixed(0);
  console.log(`upload ${(file.bytes / MB).toFixed(0)} MB (fine-tune, line-checked, fsynced): ${uploadS.toFixed(2)} s = ${mbPerS(uploadS)} MB/s`);
  console.log(`upload as user_data (no line check): ${plainS.toFixed(2)} s = ${mbPerS(plainS)} MB/s`);
  console.log(`download: ${downloadS.toFixed(2)} s = ${mbPerS(downloadS)} MB/s, sha256 identical`);
  console.log(`server RSS: baseline ${(base.rss / MB).toFixed(0)} MB, peak growth during upload ${((afterUpload.peak - base.rss) / MB).toFixed(1)} MB, during upload+download ${((after.peak - base.rss) / MB).toFixed(1)} MB`);
} finally {
  server.kill('SIGTERM');
  await once(server, 'exit').catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
