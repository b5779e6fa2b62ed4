// Worker-thread side of a threaded model runner: loads the model (weight conversion, graph, session) and runs prefill/decode off the server's event loop.
import { parentPort, workerData } from 'node:worker_threads';
import type { PreparedAdapter } from './adapter-cache.ts';
import { createModelRunner, type ModelRunner, type RunnerOptions } from './model-runner.ts';
import type { RunnerReply, RunnerRequest } from './threaded-runner.ts';

const port = parentPort!;
const post = (reply: RunnerReply) => port.postMessage(reply);
/** Adapters the server thread has sent, by key, until it says they left its cache. */
const adapters = new Map<string, PreparedAdapter>();

async function answer(runner: ModelRunner, m: RunnerRequest): Promise<void> {
  switch (m.type) {
    case 'prefill': {
      const prompts = m.prompts.map((p) => {
        if (p.adapter !== null && typeof p.adapter !== 'string') adapters.set(p.adapter.key, p.adapter);
        const adapter = p.adapter === null ? null : adapters.get(typeof p.adapter === 'string' ? p.adapter : p.adapter.key)!;
        return { tokens: p.tokens, adapter, scored: p.scored };
      });
      const { logits, promptLogits } = await runner.prefill(prompts);
      return post({ type: 'result', id: m.id, value: { logits, promptLogits } });
    }
    case 'decode':
      return post({ type: 'result', id: m.id, value: await runner.decode(m.tokens) });
    case 'release':
      return runner.release(runner.rows[m.slot]!);
    case 'forget':
      adapters.delete(m.key);
      return;
    case 'close':
      await runner.close();
      return post({ type: 'result', id: m.id, value: null });
  }
}

try {
  const options = workerData as Omit<RunnerOptions, 'log'>;
  const runner = await createModelRunner({ ...options, log: (line) => post({ type: 'log', line }) });
  // One request at a time, in arrival order: a release sent while a decode runs applies after it, as in one thread.
  let queue = Promise.resolve();
  port.on('message', (m: RunnerRequest) => {
    queue = queue.then(() => answer(runner, m)).catch((err: Error) => post({ type: 'error', id: 'id' in m ? m.id : null, message: err.message, stack: err.stack ?? '' }));
  });
  post({ type: 'ready', device: runner.device });
} catch (err) {
  post({ type: 'error', id: null, message: (err as Error).message, stack: (err as Error).stack ?? '' });
}
