// Runs the validating_files stage in a child process: reading and tokenizing a large file would otherwise hold the HTTP event loop for seconds.
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { setPriority } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { validateJobFiles, type FilesToValidate, type FilesValidation } from './validate-files.ts';
import { workerPriority } from './worker/start-training-worker.ts';

const selfPath = fileURLToPath(import.meta.url);
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Validates in a fresh child process; rejects when the child dies without an answer. `signal` kills it (a cancelled job). */
export function validateInChildProcess(files: FilesToValidate, log: (line: string) => void, signal?: AbortSignal): Promise<FilesValidation> {
  const child = fork(selfPath, [], { execArgv: ['--import', tsxLoader], stdio: ['ignore', 'inherit', 'inherit', 'ipc'], signal, killSignal: 'SIGKILL' });
  if (child.pid !== undefined) {
    try {
      // As nice as the training worker: the API answers first.
      setPriority(child.pid, workerPriority());
    } catch (e) {
      log(`could not lower the validation process's priority: ${(e as Error).message}`);
    }
  }
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m as FilesValidation));
    child.once('error', reject);
    // 'close' follows the last message, so a result always wins over this.
    child.once('close', (code, signal) => reject(new Error(`the validation process exited (${signal ?? `code ${code}`}) without a result`)));
    child.send(files);
  });
}

// In the child: one request, one answer, then exit. A server that goes away takes its validations with it.
if (process.send && process.argv[1] === selfPath) {
  process.once('disconnect', () => process.exit(1));
  // Ctrl-C and systemd's stop reach every process of the group: the server decides. Its shutdown stops this child
  // and validates again at the next start; dying here first would fail the job before the server knows it is stopping.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => {});
  process.once('message', async (files: FilesToValidate) => {
    const result = await validateJobFiles(files);
    process.send!(result, undefined, {}, () => process.exit(0));
  });
}
