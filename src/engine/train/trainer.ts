// The trainer: LoRA state + AdamW moments in JS, micro-batch gradient graphs and the AdamW graph run by cached sessions per bucket.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { parseModelConfig, type ModelConfig } from '../models/config.ts';
import { ensureWeightCache, type WeightCache } from '../models/weight-cache.ts';
import { createSession, type Device, type DeviceRequest, type Session } from '../onnx/session.ts';
import type { TrainBatch } from './batch.ts';
import { batchFeeds, bucketOf, weightSum } from './feeds.ts';
import { cachedGraph } from '../onnx/graph-cache.ts';
import { cachedWeights } from '../models/weight-source.ts';
import { buildAdamWGraph, buildLossGraph, IO, loraSpecs, type AdamWOptions, type Bucket } from './graphs.ts';
import type { LoraConfig } from '../lora/config.ts';
import { initAdapter, type AdapterTensors } from '../lora/init.ts';
import { loraModules } from '../models/parameters.ts';
import { streamSeed } from '../random.ts';


export interface OptimizerState {
  step: number; // AdamW steps taken
  m: AdapterTensors;
  v: AdapterTensors;
}

export interface TrainerOptions {
  modelDir: string;
  /** This base model's cache folder (aligned weight file and built graphs). */
  cacheDir: string;
  lora: LoraConfig;
  /** Seeds the fresh adapter (A Kaiming-uniform, B zero) when `adapter` is not given. */
  seed: number;
  /** The starting adapter (a checkpoint or an imported PEFT adapter); default initAdapter(config, lora, seed). */
  adapter?: AdapterTensors;
  adamw?: Partial<AdamWOptions>;
  /** Global gradient-norm clip; ≤ 0 disables. Default 1. */
  maxGradNorm?: number;
  device?: DeviceRequest;
  threads?: number;
  lowMemory?: boolean;
  log?: (line: string) => void;
}

export interface StepResult {
  step: number; // AdamW steps taken after this one
  loss: number; // Σ w·ce / Σ w over the micro-batches
  accuracy: number; // Σ w·[argmax = label] / Σ w
  tokens: number; // weighted (trained) tokens
  gradNorm: number; // before clipping
}

export interface EvalResult {
  loss: number;
  accuracy: number;
  tokens: number;
}

export interface GradientResult {
  loss: number;
  accuracy: number;
  tokens: number;
  grads: AdapterTensors; // ∂(mean loss)/∂ each LoRA tensor, PEFT names
}

export interface Trainer {
  config: ModelConfig;
  device: Device;
  /** Gradients of the mean loss over the micro-batches, without an update (verification). */
  gradients(microBatches: TrainBatch[]): Promise<GradientResult>;
  trainStep(microBatches: TrainBatch[], lr: number): Promise<StepResult>;
  evaluate(batches: TrainBatch[]): Promise<EvalResult>;
  getAdapter(): AdapterTensors;
  setAdapter(tensors: AdapterTensors): void;
  getOptimizerState(): OptimizerState;
  setOptimizerState(state: OptimizerState): void;
  close(): Promise<void>;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

const copyTensors = (t: AdapterTensors): AdapterTensors => new Map([...t].map(([k, v]) => [k, { dims: [...v.dims], data: v.data.slice() }]));
const scalar = (x: number) => new ort.Tensor('float32', Float32Array.of(x), []);

export async function createTrainer(o: TrainerOptions): Promise<Trainer> {
  const config = parseModelConfig(JSON.parse(readFileSync(join(o.modelDir, 'config.json'), 'utf8')));
  const cache: WeightCache = ensureWeightCache(o.modelDir, o.cacheDir, { dtype: 'float32' });
  const weights = cachedWeights(cache);
  const adamw = { ...DEFAULT_ADAMW, ...o.adamw };
  const maxGradNorm = o.maxGradNorm ?? 1;
  const specs = loraSpecs(config, o.lora);
  const sessionOpts = { device: o.device, threads: o.threads, lowMemory: o.lowMemory, log: o.log };
  const sessions = new Map<string, Promise<Session>>();
  let device: Device | undefined;

  const session = (kind: string, options: unknown, build: Parameters<typeof cachedGraph>[3]): Promise<Session> => {
    const key = `${kind}:${JSON.stringify(options)}`;
    let s = sessions.get(key);
    if (!s) {
      s = createSession(cachedGraph(dirname(cache.dataPath), kind, { weights: cache.manifest.fingerprint, dtype: cache.manifest.dtype, options }, build), sessionOpts).then((made) => {
        device ??= made.device;
        return made;
      });
      sessions.set(key, s);
    }
    return s;
  };
  const lossSession = (kind: 'grad' | 'eval', bucket: Bucket) => session(kind, { bucket, lora: o.lora }, () => buildLossGraph(kind, config, weights, o.lora, bucket));
  const adamwSession = () => session('adamw', { lora: o.lora, adamw }, () => buildAdamWGraph(specs, adamw));

  let adapter = checkAdapter(o.adapter ? copyTensors(o.adapter) : initAdapter(config, o.lora, o.seed));
  const zeros = () => new Map(specs.map((p) => [p.name, { dims: p.dims, data: new Float32Array(p.dims.reduce((a, b) => a * b, 1)) }]));
  let state: OptimizerState = { step: 0, m: zeros(), v: zeros() };

  function checkAdapter(t: AdapterTensors): AdapterTensors {
    for (const p of specs) {
      const got = t.get(p.name);
      if (!got || got.dims.join(',') !== p.dims.join(',')) throw new Error(`adapter tensor ${p.name}: expected [${p.dims}], got ${got ? `[${got.dims}]` : 'none'}`);
    }
    if (t.size !== specs.length) throw new Error(`adapter has ${t.size} tensors, the LoRA config needs ${specs.length}`);
    return t;
  }

  const loraFeeds = (): Record<string, ort.Tensor> => Object.fromEntries(specs.map((p) => [p.name, new ort.Tensor('float32', adapter.get(p.name)!.data, p.dims)]));

  /**
   * LoRA dropout seeds of micro-batch `index` of AdamW step `step`, one per module: a function of (job seed, step,
   * micro-batch, module) only, so a trainer restored from a saved state draws exactly the masks an uninterrupted one would.
   */
  const moduleCount = loraModules(config, o.lora.targetModules).length;
  const dropoutFeeds = (step: number, index: number): Record<string, ort.Tensor> => {
    if (o.lora.dropout === 0) return {};
    const base = streamSeed(streamSeed(o.seed, step), index);
    const seeds = BigInt64Array.from({ length: moduleCount }, (_, j) => BigInt(streamSeed(base, j)));
    return { [IO.dropoutSeeds]: new ort.Tensor('int64', seeds, [moduleCount]) };
  };

  /**
   * Runs every micro-batch's gradient graph and sums the unnormalised gradients (in a fixed order,
   * so results are bitwise reproducible); `mean` divides them by Σ w to give ∂(mean loss)/∂tensor.
   */
  async function accumulate(microBatches: TrainBatch[], mean = true): Promise<GradientResult & { weightSum: number }> {
    if (microBatches.length === 0) throw new Error('a training step needs at least one micro-batch');
    const grads = zeros();
    let lossSum = 0;
    let correctSum = 0;
    let wsum = 0;
    let tokens = 0;
    for (const [index, mb] of microBatches.entries()) {
      const bucket = bucketOf(mb);
      const s = await lossSession('grad', bucket);
      const out = await s.run({ ...batchFeeds(mb, bucket, 'float32', config.slidingWindow), ...loraFeeds(), ...dropoutFeeds(state.step + 1, index) });
      for (const p of specs) {
        const acc = grads.get(p.name)!.data;
        const d = out[IO.grad(p.name)].data as Float32Array;
        for (let i = 0; i < acc.length; i++) acc[i] += d[i];
      }
      lossSum += (out[IO.lossSum].data as Float32Array)[0];
      correctSum += (out[IO.correctSum].data as Float32Array)[0];
      wsum += weightSum(mb);
      for (const w of mb.lossWeights) if (w > 0) tokens++;
    }
    if (wsum <= 0) throw new Error('the micro-batches carry no loss weight (no trained tokens)');
    if (mean) for (const g of grads.values()) for (let i = 0; i < g.data.length; i++) g.data[i] /= wsum;
    return { loss: lossSum / wsum, accuracy: correctSum / wsum, tokens, weightSum: wsum, grads };
  }

  // Warm the device choice early so `device` is known once the trainer exists.
  await adamwSession();

  return {
    config,
    get device() {
      return device!;
    },

    gradients: (microBatches) => accumulate(microBatches),

    async trainStep(microBatches, lr) {
      const { loss, accuracy, tokens, weightSum: wsum, grads } = await accumulate(microBatches, false);
      const step = state.step + 1;
      const feeds: Record<string, ort.Tensor> = {
        [IO.weightSum]: scalar(wsum),
        [IO.lr]: scalar(lr),
        [IO.step]: scalar(step),
        [IO.maxGradNorm]: scalar(maxGradNorm),
        ...loraFeeds(),
      };
      for (const p of specs) {
        feeds[IO.grad(p.name)] = new ort.Tensor('float32', grads.get(p.name)!.data, p.dims);
        feeds[IO.m(p.name)] = new ort.Tensor('float32', state.m.get(p.name)!.data, p.dims);
        feeds[IO.v(p.name)] = new ort.Tensor('float32', state.v.get(p.name)!.data, p.dims);
      }
      const out = await (await adamwSession()).run(feeds);
      const next = (name: (n: string) => string) => new Map(specs.map((p) => [p.name, { dims: p.dims, data: out[name(p.name)].data as Float32Array }]));
      adapter = next(IO.next);
      state = { step, m: next(IO.nextM), v: next(IO.nextV) };
      return { step, loss, accuracy, tokens, gradNorm: (out[IO.gradNorm].data as Float32Array)[0] };
    },

    async evaluate(batches) {
      let lossSum = 0;
      let correctSum = 0;
      let wsum = 0;
      let tokens = 0;
      for (const b of batches) {
        const bucket = bucketOf(b);
        const out = await (await lossSession('eval', bucket)).run({ ...batchFeeds(b, bucket, 'float32', config.slidingWindow), ...loraFeeds() });
        lossSum += (out[IO.lossSum].data as Float32Array)[0];
        correctSum += (out[IO.correctSum].data as Float32Array)[0];
        wsum += weightSum(b);
        for (const w of b.lossWeights) if (w > 0) tokens++;
      }
      if (wsum <= 0) throw new Error('evaluate: the batches carry no loss weight');
      return { loss: lossSum / wsum, accuracy: correctSum / wsum, tokens };
    },

    getAdapter: () => copyTensors(adapter),
    setAdapter(t) {
      adapter = checkAdapter(copyTensors(t));
    },
    getOptimizerState: () => ({ step: state.step, m: copyTensors(state.m), v: copyTensors(state.v) }),
    setOptimizerState(s) {
      state = { step: s.step, m: checkAdapter(copyTensors(s.m)), v: checkAdapter(copyTensors(s.v)) };
    },
    async close() {
      const all = await Promise.all(sessions.values());
      sessions.clear();
      await Promise.all(all.map((s) => s.close()));
    },
  };
}
