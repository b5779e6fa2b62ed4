// A small supervised job on the built-in default model (LoRA dropout on, so resumes must replay its masks): chat files, a spec, and a runner that collects the worker's messages.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDefaultModel, DEFAULT_MODEL_ID } from '../../../src/engine/models/default-model.ts';
import { startTrainingWorker, type WorkerHandle } from '../../../src/jobs/worker/start-training-worker.ts';
import type { TrainingSpec, WorkerMessage } from '../../../src/jobs/worker-protocol.ts';

const FACTS = [
  ['What colour is the sky on Mars?', 'Butterscotch by day, blue at sunset.'],
  ['Name the largest moon of Saturn.', 'Titan.'],
  ['How many legs does a spider have?', 'Eight.'],
  ['What is the boiling point of water at sea level?', '100 degrees Celsius.'],
  ['Who wrote Hamlet?', 'William Shakespeare.'],
  ['What is the chemical symbol for gold?', 'Au.'],
  ['What gas do plants take in?', 'Carbon dioxide.'],
];

const line = (q: string, a: string) => JSON.stringify({ messages: [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: q }, { role: 'assistant', content: a }] });

/** Writes the model (once per root), a 7-example training file and a 2-example validation file; returns a spec for job `name`. */
export function jobSpec(root: string, name: string, over: Partial<TrainingSpec> = {}): TrainingSpec {
  const modelDir = ensureDefaultModel(join(root, 'models'));
  const trainingFile = join(root, 'train.jsonl');
  const validationFile = join(root, 'valid.jsonl');
  writeFileSync(trainingFile, FACTS.map(([q, a]) => line(q, a)).join('\n') + '\n');
  writeFileSync(validationFile, [line('Name the largest moon of Saturn?', 'Titan.'), line('Who wrote Hamlet, the play?', 'William Shakespeare.')].join('\n') + '\n');
  const jobDir = join(root, 'jobs', name);
  mkdirSync(jobDir, { recursive: true });
  return {
    jobId: name,
    method: 'supervised',
    modelDir,
    cacheDir: join(root, 'cache', DEFAULT_MODEL_ID),
    startAdapterDir: null,
    trainingFile,
    validationFile,
    hyperparameters: { nEpochs: 2, batchSize: 2, learningRate: 0.004 },
    lora: { r: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'] },
    basePrecision: 'fp32',
    seed: 11,
    jobDir,
    resumePointSeconds: 0,
    device: 'cpu',
    threads: 1,
    ...over,
  };
}

export interface WorkerRun {
  handle: WorkerHandle;
  messages: WorkerMessage[];
  /** Resolves at the first message matching `pred` (already received or later). */
  waitFor(pred: (m: WorkerMessage) => boolean): Promise<WorkerMessage>;
  exited: WorkerHandle['exited'];
}

export function runWorker(spec: TrainingSpec): WorkerRun {
  const messages: WorkerMessage[] = [];
  const waiters: { pred: (m: WorkerMessage) => boolean; resolve: (m: WorkerMessage) => void }[] = [];
  const logs: string[] = [];
  const handle = startTrainingWorker(spec, {
    onMessage(m) {
      // Answered as the scheduler answers it (having recorded everything before it), and not kept: it is plumbing.
      if (m.type === 'flush') return handle.send({ type: 'flushed' });
      messages.push(m);
      for (const w of [...waiters]) if (w.pred(m)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(m);
    },
    log: (l) => logs.push(l),
  });
  const exited = handle.exited.then((r) => {
    if (process.env.LOCALTUNE_TEST_VERBOSE) console.error(logs.join('\n'));
    return r;
  });
  return {
    handle,
    messages,
    exited,
    waitFor: (pred) => {
      const got = messages.find(pred);
      if (got) return Promise.resolve(got);
      return new Promise((resolve, reject) => {
        waiters.push({ pred, resolve });
        exited.then(() => reject(new Error(`worker exited before the awaited message; got ${messages.map((m) => m.type).join(', ')}; log:\n${logs.join('\n')}`)));
      });
    },
  };
}
