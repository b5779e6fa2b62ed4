// What the supervised and the DPO trainer share: LoRA state + AdamW moments in JS, cached sessions per graph kind and bucket, the AdamW update.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { parseModelConfig, type ModelConfig } from '../models/config.ts';
import { ensureWeightCache } from '../models/weight-cache.ts';
import type { Precision } from '../models/quantize.ts';
import { cachedWeights, type WeightFactory } from '../models/weight-source.ts';
import { loraModules, type ParameterSpec } from '../models/parameters.ts';
import { fillKeepMask, streamSeed } from '../random.ts';
import { cachedGraph } from '../onnx/graph-cache.ts';
import { numel, type Graph } from '../onnx/graph.ts';
import { createSession, type Device, type DeviceRequest, type Session } from '../onnx/session.ts';
import type { LoraConfig } from '../lora/config.ts';
import { initAdapter, type AdapterTensors } from '../lora/init.ts';
import { buildAdamWGraph, IO, loraSpecs, type AdamWOptions } from './graphs.ts';

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
  /** The frozen base's precision: fp32 (default), or its matrices block-quantized (QLoRA: nf4). */
  precision?: Precision;
  /** Seeds the fresh adapter (A Kaiming-uniform, B zero) when `adapter` is not given. */
  seed: number;
  /** The starting adapter (a checkpoint or an imported PEFT adapter); default initAdapter(config, lora, seed). */
  adapter?: AdapterTensors;
  adamw?: Partial<AdamWOptions>;
  /** Global gradient-norm clip; ≤ 0 disables. Default 1. */
  maxGradNorm?: number;
  device?: DeviceRequest;
  threads?: number;
  /** Sessions without memory patterns or prepacked weight copies (SessionOptions.lowMemory). Default: for an nf4 base only. */
  lowMemory?: boolean;
  log?: (line: string) => void;
}

/** The state every trainer exposes, whatever its step kind. */
export interface AdapterTrainer {
  config: ModelConfig;
  device: Device;
  getAdapter(): AdapterTensors;
  setAdapter(tensors: AdapterTensors): void;
  getOptimizerState(): OptimizerState;
  setOptimizerState(state: OptimizerState): void;
  close(): Promise<void>;
}

/** The shared machinery a step kind builds on. */
export interface TrainerCore {
  /** The common methods; a step kind adds its own onto this object. */
  trainer: AdapterTrainer;
  weights: WeightFactory;
  specs: ParameterSpec[];
  /**
   * The dropout_mask:<j> inputs of micro-batch `index` (of `rows` = B·T hidden rows) of the next AdamW step, one keep-mask
   * per module (none without dropout): a function of (job seed, step, micro-batch, module) only, so a trainer restored
   * from a saved state draws exactly the masks an uninterrupted one would.
   */
  dropoutFeeds(index: number, rows: number): Record<string, ort.Tensor>;
  /** The cached session of graph `kind` built with `options` (everything the graph depends on besides the weights). */
  session(kind: string, options: unknown, build: () => Graph): Promise<Session>;
  /** The adapter as graph inputs: the trained one, or `tensors` (e.g. a fixed reference adapter). */
  loraFeeds(tensors?: AdapterTensors): Record<string, ort.Tensor>;
  /** Throws unless `tensors` has exactly the LoRA config's tensors and shapes; returns them. */
  checkAdapter(tensors: AdapterTensors): AdapterTensors;
  /** Zero tensors shaped like the adapter (gradient accumulators). */
  zeros(): AdapterTensors;
  /** Adds a gradient graph's grad:<name> outputs into `into`, in a fixed order (bitwise reproducible sums). */
  addGradients(into: AdapterTensors, out: Record<string, ort.Tensor>): void;
  /** One AdamW step over summed gradients: g = grads/weightSum, clipped; updates the adapter and moments. */
  update(grads: AdapterTensors, weightSum: number, lr: number): Promise<{ step: number; gradNorm: number }>;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

export const copyTensors = (t: AdapterTensors): AdapterTensors => new Map([...t].map(([k, v]) => [k, { dims: [...v.dims], data: v.data.slice() }]));
const scalar = (x: number) => new ort.Tensor('float32', Float32Array.of(x), []);

export async function createTrainerCore(o: TrainerOptions): Promise<TrainerCore> {
  const config = parseModelConfig(JSON.parse(readFileSync(join(o.modelDir, 'config.json'), 'utf8')));
  const cache = ensureWeightCache(o.modelDir, o.cacheDir, { dtype: 'float32', precision: o.precision });
  const weights = cachedWeights(cache);
  const adamw = { ...DEFAULT_ADAMW, ...o.adamw };
  const maxGradNorm = o.maxGradNorm ?? 1;
  const specs = loraSpecs(config, o.lora);
  const modules = loraModules(config, o.lora.targetModules);
  // An nf4 base trains in low-memory sessions unless told otherwise: its kernel has nothing to prepack, and without
  // memory patterns the 1B Llama shape's 1 × 512 step peaked at 5.1 instead of 7.6 GiB (step time within this machine's noise).
  const sessionOpts = { device: o.device, threads: o.threads, lowMemory: o.lowMemory ?? o.precision === 'nf4', log: o.log };
  const sessions = new Map<string, Promise<Session>>();
  let device: Device | undefined;

  const session = (kind: string, options: unknown, build: () => Graph): Promise<Session> => {
    const key = `${kind}:${JSON.stringify(options)}`;
    let s = sessions.get(key);
    if (!s) {
      s = createSession(cachedGraph(dirname(cache.dataPath), kind, { weights: cache.manifest.fingerprint, dtype: cache.manifest.dtype, precision: cache.manifest.precision, options }, build), sessionOpts).then((made) => {
        device ??= made.device;
        return made;
      });
      sessions.set(key, s);
    }
    return s;
  };
  const size = specs.reduce((n, p) => n + numel(p.dims), 0);
  const adamwSession = () => session('adamw', { size, adamw }, () => buildAdamWGraph(size, adamw));
  /** The tensors concatenated in spec order: the AdamW graph's [P] layout. */
  const flatten = (t: AdapterTensors): ort.Tensor => {
    const flat = new Float32Array(size);
    let at = 0;
    for (const p of specs) {
      const data = t.get(p.name)!.data;
      flat.set(data, at);
      at += data.length;
    }
    return new ort.Tensor('float32', flat, [size]);
  };
  /** Views of a [P] vector as the tensors (no copy). */
  const unflatten = (flat: Float32Array): AdapterTensors => {
    let at = 0;
    return new Map(
      specs.map((p) => {
        const n = numel(p.dims);
        at += n;
        return [p.name, { dims: p.dims, data: flat.subarray(at - n, at) }];
      }),
    );
  };

  function checkAdapter(t: AdapterTensors): AdapterTensors {
    for (const p of specs) {
      const got = t.get(p.name);
      if (!got || got.dims.join(',') !== p.dims.join(',')) throw new Error(`adapter tensor ${p.name}: expected [${p.dims}], got ${got ? `[${got.dims}]` : 'none'}`);
    }
    if (t.size !== specs.length) throw new Error(`adapter has ${t.size} tensors, the LoRA config needs ${specs.length}`);
    return t;
  }

  let adapter = checkAdapter(o.adapter ? copyTensors(o.adapter) : initAdapter(config, o.lora, o.seed));
  const zeros = (): AdapterTensors => new Map(specs.map((p) => [p.name, { dims: p.dims, data: new Float32Array(numel(p.dims)) }]));
  let state: OptimizerState = { step: 0, m: zeros(), v: zeros() };

  const loraFeeds = (tensors = adapter): Record<string, ort.Tensor> => Object.fromEntries(specs.map((p) => [p.name, new ort.Tensor('float32', tensors.get(p.name)!.data, p.dims)]));

  // Warm the device choice early so `device` is known once the trainer exists.
  await adamwSession();

  return {
    trainer: {
      config,
      get device() {
        return device!;
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
    },
    weights,
    specs,
    dropoutFeeds(index, rows) {
      if (o.lora.dropout === 0) return {};
      const base = streamSeed(streamSeed(o.seed, state.step + 1), index);
      return Object.fromEntries(
        modules.map((m, j) => [IO.dropoutMask(j), new ort.Tensor('bool', fillKeepMask(new Uint8Array(rows * m.in), streamSeed(base, j), o.lora.dropout), [rows, m.in])]),
      );
    },
    session,
    loraFeeds,
    checkAdapter,
    zeros,
    addGradients(into, out) {
      for (const p of specs) {
        const acc = into.get(p.name)!.data;
        const d = out[IO.grad(p.name)].data as Float32Array;
        for (let i = 0; i < acc.length; i++) acc[i] += d[i];
      }
    },
    async update(grads, weightSum, lr) {
      const step = state.step + 1;
      const out = await (await adamwSession()).run({
        [IO.weightSum]: scalar(weightSum),
        [IO.lr]: scalar(lr),
        [IO.step]: scalar(step),
        [IO.maxGradNorm]: scalar(maxGradNorm),
        [IO.params]: flatten(adapter),
        [IO.grads]: flatten(grads),
        [IO.m]: flatten(state.m),
        [IO.v]: flatten(state.v),
      });
      adapter = unflatten(out[IO.nextParams].data as Float32Array);
      state = { step, m: unflatten(out[IO.nextM].data as Float32Array), v: unflatten(out[IO.nextV].data as Float32Array) };
      return { step, gradNorm: (out[IO.gradNorm].data as Float32Array)[0] };
    },
  };
}
