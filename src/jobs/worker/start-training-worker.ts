// Starts one job's training worker: a child Node process at lower priority, spoken to with the worker protocol over IPC.
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { getPriority, setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { TrainingSpec, WorkerCommand, WorkerMessage, WorkerReply } from '../worker-protocol.ts';

/** How much nicer than the server the worker runs: training yields the CPU to it, so the API stays responsive while a job trains. */
export const WORKER_NICENESS = 5;
/** The worker's niceness: the server's plus WORKER_NICENESS, within Unix's limit of 19. */
export const workerPriority = () => Math.min(19, getPriority() + WORKER_NICENESS);
/** The environment variable the spec travels in to child.ts. */
export const SPEC_ENV = 'LOCALTUNE_TRAINING_SPEC';

export interface WorkerHandle {
  pid: number | undefined;
  /** Commands are honoured when the worker next finishes a step, replies at once; ignored once it has exited. */
  send(cmd: WorkerCommand | WorkerReply): void;
  kill(signal?: NodeJS.Signals): void;
  /** Resolves when the worker has exited and every message it sent has been delivered. */
  exited: Promise<{ code: number | null; signal: string | null }>;
}

export interface WorkerOptions {
  onMessage(m: WorkerMessage): void;
  /** The worker's log lines (its stdout and stderr); default: stderr, prefixed with the job id. */
  log?(line: string): void;
}

const childPath = fileURLToPath(new URL('./child.ts', import.meta.url));
// The worker runs the TypeScript sources through tsx, as bin/localtune.js does; resolved here so any cwd works.
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export function startTrainingWorker(spec: TrainingSpec, o: WorkerOptions): WorkerHandle {
  const log = o.log ?? ((line: string) => process.stderr.write(`[training ${spec.jobId}] ${line}\n`));
  const child = fork(childPath, [], {
    execArgv: ['--import', tsxLoader],
    env: { ...process.env, [SPEC_ENV]: JSON.stringify(spec) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  if (child.pid !== undefined) {
    try {
      setPriority(child.pid, workerPriority());
    } catch (e) {
      log(`could not lower the training worker's priority: ${(e as Error).message}`);
    }
  }
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', log);
  child.on('message', (m) => o.onMessage(m as WorkerMessage));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on('error', (e) => {
      log(`training worker: ${e.message}`);
      if (child.pid === undefined) resolve({ code: null, signal: null }); // never started: no 'close' follows
    });
    // 'close' comes after 'exit' once the IPC channel and pipes are drained, so no message arrives after it.
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return {
    pid: child.pid,
    send(cmd) {
      if (child.connected) child.send(cmd);
    },
    kill(signal = 'SIGTERM') {
      child.kill(signal);
    },
    exited,
  };
}
