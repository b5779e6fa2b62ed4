// Runs an export in a child process: merging and encoding a model's weights takes seconds of CPU, which would otherwise hold the HTTP event loop.
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { setPriority } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ExportRefused, exportModel, type ExportRequest } from './export-model.ts';

const selfPath = fileURLToPath(import.meta.url);
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

type ExportReply = { files: string[] } | { error: string; refused: ExportRefused['param'] | null };

/**
 * Exports in a fresh child process at `priority` (a nice value, so the API answers first); resolves with the files
 * written, rejects with its error (an ExportRefused for refusals). `signal` kills it (a client that went away).
 */
export function exportInChildProcess(request: ExportRequest, o: { signal?: AbortSignal; priority?: number } = {}): Promise<string[]> {
  const child = fork(selfPath, [], { execArgv: ['--import', tsxLoader], stdio: ['ignore', 'inherit', 'inherit', 'ipc'], signal: o.signal, killSignal: 'SIGKILL' });
  if (child.pid !== undefined && o.priority !== undefined) setPriority(child.pid, o.priority);
  return new Promise((resolve, reject) => {
    child.once('message', (m: ExportReply) => {
      if ('files' in m) resolve(m.files);
      else reject(m.refused ? new ExportRefused(m.error, m.refused) : new Error(m.error));
    });
    child.once('error', reject);
    // 'close' follows the last message, so a reply always wins over this.
    child.once('close', (code, sig) => reject(new Error(`the export process exited (${sig ?? `code ${code}`}) without a result`)));
    child.send(request);
  });
}

// In the child: one request, one reply, then exit.
if (process.send && process.argv[1] === selfPath) {
  process.once('disconnect', () => process.exit(1));
  process.once('message', (request: ExportRequest) => {
    let reply: ExportReply;
    try {
      reply = { files: exportModel(request) };
    } catch (err) {
      // A refusal's message is for the user; anything else goes back whole, for the server's log.
      reply = err instanceof ExportRefused ? { error: err.message, refused: err.param } : { error: (err as Error).stack ?? String(err), refused: null };
    }
    process.send!(reply, undefined, {}, () => process.exit(0));
  });
}
