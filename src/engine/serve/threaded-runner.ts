// A model runner in a worker thread: loading (weight conversion, graph build, session creation) and every run happen off the server's event loop.
// ORT creates sessions and runs graphs synchronously on the calling thread; in the server's thread a first load stalled every request for seconds.
// This thread keeps a mirror of the runner's rows (same slots, same lengths) so the scheduler reads them without asking.
import { Worker } from 'node:worker_threads';
import type { Device } from '../onnx/session.ts';
import type { PreparedAdapter } from './adapter-cache.ts';
import { removeRow, type CacheRow, type ModelRunner, type RunnerOptions } from './model-runner.ts';

/** Server thread → runner thread. An adapter travels whole the first time, then by key until forgotten. */
export type RunnerRequest =
  | { type: 'prefill'; id: number; prompts: { tokens: number[]; adapter: PreparedAdapter | string | null; scored?: boolean }[] }
  | { type: 'decode'; id: number; tokens: number[] }
  | { type: 'release'; slot: number }
  | { type: 'forget'; key: string }
  | { type: 'close'; id: number };

/** Runner thread → server thread. An error with id null is the runner's own failure (at load or after it). */
export type RunnerReply =
  | { type: 'ready'; device: Device }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number | null; message: string; stack: string }
  | { type: 'log'; line: string };

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

export interface ThreadedModelRunner extends ModelRunner {
  /** The adapter left the server's cache: the runner thread drops its copy (rows running with it keep theirs). */
  forgetAdapter(key: string): void;
}

const entry = new URL('./runner-thread.ts', import.meta.url).href;
// The thread runs the TypeScript sources through tsx, registered in the thread itself (the server's registration does not carry over).
const bootstrap = `import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))}; register(); await import(${JSON.stringify(entry)});`;

/**
 * Starts the runner thread and resolves once its model is loaded (the server's event loop stays free meanwhile).
 * If the thread dies (out of memory, a native crash), every pending and later call rejects and `onExit` is called.
 */
export function startThreadedModelRunner(o: RunnerOptions & { onExit?: (err: Error) => void }): Promise<ThreadedModelRunner> {
  const { log, onExit, ...options } = o;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`), { workerData: options });
  const pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void }>();
  let nextId = 0;
  let failure: Error | null = null;
  const rows: CacheRow[] = [];
  const shipped = new Map<string, PreparedAdapter>();

  const call = (request: WithoutId<Extract<RunnerRequest, { id: number }>>) =>
    new Promise<unknown>((resolve, reject) => {
      if (failure) return reject(failure);
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ ...request, id });
    });
  const send = (request: RunnerRequest) => {
    if (!failure) worker.postMessage(request);
  };
  const fail = (err: Error) => {
    if (failure) return;
    failure = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    onExit?.(err);
  };
  const threadError = (m: { message: string; stack: string }) => Object.assign(new Error(m.message), { stack: m.stack });

  return new Promise((resolve, reject) => {
    worker.on('message', (m: RunnerReply) => {
      if (m.type === 'log') return log?.(m.line);
      if (m.type === 'ready') return resolve(runner(m.device));
      if (m.type === 'result') {
        pending.get(m.id)?.resolve(m.value);
        pending.delete(m.id);
      } else if (m.id === null) {
        reject(threadError(m));
        fail(threadError(m));
        void worker.terminate();
      } else {
        pending.get(m.id)?.reject(threadError(m));
        pending.delete(m.id);
      }
    });
    worker.on('error', (err) => {
      reject(err);
      fail(err);
    });
    worker.on('exit', (code) => {
      const err = new Error(`the model runner thread exited (code ${code})`);
      reject(err);
      fail(err);
    });
  });

  function runner(device: Device): ThreadedModelRunner {
    return {
      device,
      rows,
      async prefill(prompts) {
        const sent = prompts.map((p) => {
          const a = p.adapter;
          if (a === null) return { ...p, adapter: null };
          const known = shipped.get(a.key) === a;
          shipped.set(a.key, a);
          return { ...p, adapter: known ? a.key : a };
        });
        const out = (await call({ type: 'prefill', prompts: sent })) as { logits: Float32Array[]; promptLogits: (Float32Array | null)[] };
        const made = prompts.map((p, b) => ({ slot: rows.length + b, length: p.tokens.length, adapter: p.adapter }));
        rows.push(...made);
        return { rows: made, ...out };
      },
      async decode(tokens) {
        const logits = (await call({ type: 'decode', tokens })) as Float32Array[];
        for (const r of rows) r.length++;
        return logits;
      },
      release(row) {
        const slot = row.slot;
        if (!rows.includes(row)) return;
        removeRow(rows, row);
        send({ type: 'release', slot });
      },
      forgetAdapter(key) {
        if (shipped.delete(key)) send({ type: 'forget', key });
      },
      async close() {
        if (!failure) await call({ type: 'close' });
        failure = new Error('the model runner is closed');
        await worker.terminate();
      },
    };
  }
}
