// A server and workers sharing one SQLite data directory: a worker writes a job's result file (blob, then row) in one
// transaction, and the server's start-up recovery, run meanwhile in another process, waits for it instead of taking
// the blob, a moment before its row, for a crash's leftovers.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { openStore } from '../../src/store/open.ts';
import { file } from './contract/cases.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

test('start-up recovery waits for a worker\'s transaction that wrote a result blob and is about to insert its row', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'localtune-shared-'));
  const worker = await openStore({ dataDir });
  try {
    // The server: its start-up recovery (server.ts) in another process, which says when it begins.
    const server = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import { openStore } from './src/store/open.ts';
      import { recoverFileStorage } from './src/server.ts';
      const store = await openStore({ dataDir: ${JSON.stringify(dataDir)} });
      console.log('recovering');
      await recoverFileStorage(store, (line) => console.log(line));
      await store.close();
      console.log('recovered');`], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    const said = (line: string) => new Promise<void>((resolve, reject) => {
      const check = () => (output.includes(line) ? resolve() : undefined);
      server.stdout.on('data', (d) => ((output += d), check()));
      server.on('exit', (code) => reject(new Error(`recovery exited (${code}) before saying ${line}: ${output}`)));
      check();
    });
    // The worker, as job-results does: the blob, then (a moment later) its row, in one transaction.
    await worker.transaction(async (tx) => {
      await tx.blobs.write('file-result', 'step,train_loss\n1,0.5\n');
      await said('recovering');
      await sleep(300);
      await tx.files.insert(file('file-result', 100, { purpose: 'fine-tune-results' }));
    });
    await said('recovered');
    assert.doesNotMatch(output, /orphaned blob/, output);
    assert.equal(readFileSync(await worker.blobs.localPath('file-result'), 'utf8'), 'step,train_loss\n1,0.5\n');
    assert.ok(await worker.files.exists('file-result'));
  } finally {
    await worker.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
