// The training worker process: reads its spec from the environment, trains, reports over IPC, exits when done.
import type { TrainingSpec, WorkerCommand, WorkerMessage, WorkerReply } from '../worker-protocol.ts';
import { SPEC_ENV } from './start-training-worker.ts';

if (!process.send) throw new Error('the training worker runs as a child process with an IPC channel (startTrainingWorker)');
const spec = JSON.parse(process.env[SPEC_ENV] ?? 'null') as TrainingSpec;
if (!spec) throw new Error(`the training worker needs its spec in ${SPEC_ENV}`);

// Listening starts before the engine loads (a second or more), so a command sent right after the start is not missed.
let pending: WorkerCommand['type'] | null = null;
/** Flushes waiting for their `flushed`, answered in the order they were sent. */
const flushes: (() => void)[] = [];
// Cancel wins over the others; pause and shutdown both save a resume point, so whichever came first stands.
process.on('message', (cmd: WorkerCommand | WorkerReply) => {
  if (cmd?.type === 'flushed') return void flushes.shift()?.();
  if (cmd?.type === 'cancel' || ((cmd?.type === 'pause' || cmd?.type === 'shutdown') && pending === null)) pending = cmd.type;
});
// Ctrl-C in a terminal reaches the whole process group, and systemd stops every process of the service: a stop
// signal is the server's shutdown command (the server, if it lives on, restarts the worker from the saved point).
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (pending === null) pending = 'shutdown';
  });
}
// The server went away (crashed or was killed): stop, so a restarted server's worker is the job's only writer.
let finished = false;
process.on('disconnect', () => {
  if (!finished) process.exit(1);
});

const send = (m: WorkerMessage) =>
  new Promise<void>((resolve, reject) => {
    process.send!(m, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });

const { runTrainingJob } = await import('./training-job.ts');
const flush = async () => {
  const flushed = new Promise<void>((resolve) => flushes.push(resolve));
  await send({ type: 'flush' });
  await flushed;
};

const outcome = await runTrainingJob(spec, { send, flush, pendingCommand: () => pending, log: (line) => console.error(line) });
finished = true;
process.exit(outcome === 'failed' ? 1 : 0);
