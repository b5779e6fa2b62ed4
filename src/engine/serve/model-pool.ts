// The served base models: each loaded on first request (tokenizer, chat template, one session, one scheduler) and shared by all its adapters.
// A base model is loaded once per precision requests need (base requests: the pool's; ft: models: the one they were trained on).
import { existsSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { compileChatTemplate, type ChatTemplate } from '../models/chat-template.ts';
import type { ModelConfig } from '../models/config.ts';
import { readModelDir } from '../models/model-dir.ts';
import { baseWeightBytes } from '../models/memory-estimate.ts';
import type { Precision } from '../models/quantize.ts';
import { MODEL_ID_PATTERN } from '../models/registry.ts';
import { loadTokenizer, type ModelTokenizer } from '../models/tokenizer.ts';
import { cudaProviderPath, requestedDevice, type Device, type DeviceRequest } from '../onnx/session.ts';
import { createAdapterCache, type PreparedAdapter } from './adapter-cache.ts';
import { createModelRunner, type ModelRunner } from './model-runner.ts';
import { createScheduler, type Scheduler } from './scheduler.ts';

export interface ServedModel {
  id: string;
  /** The precision its base weights are held at. */
  precision: Precision;
  config: ModelConfig;
  contextLength: number;
  tokenizer: ModelTokenizer;
  template: ChatTemplate;
  device: Device;
  scheduler: Scheduler;
}

export interface ModelPoolOptions {
  modelsDir: string;
  /** Per-model cache folders (weights, graphs) go under `<cacheDir>/<model id>`. */
  cacheDir: string;
  adapterCacheBytes: number;
  maxBatch: number;
  /** The precision base models are served at (default auto: fp32 when its resident weights fit comfortably, else nf4). */
  basePrecision?: Precision | 'auto';
  device?: DeviceRequest;
  threads?: number;
  log?: (line: string) => void;
}

/**
 * Serving's `auto`: fp32 when the model's resident fp32 weights (×2: onnxruntime keeps a packed copy) take at most half
 * of `memoryBytes`, else nf4.
 */
export function servingPrecision(config: ModelConfig, requested: Precision | 'auto', memoryBytes = totalmem()): Precision {
  if (requested !== 'auto') return requested;
  return 2 * baseWeightBytes(config, 'fp32').total <= 0.5 * memoryBytes ? 'fp32' : 'nf4';
}

export interface ModelPool {
  /**
   * The base model `id` (a directory under modelsDir) at `precision` (default: the pool's base precision), loaded on
   * first use. Throws if it is not a usable model.
   */
  model(id: string, precision?: Precision): Promise<ServedModel>;
  /** The adapter stored in `dir` for `model`, cached under `key` (e.g. its ft: id). */
  adapter(key: string, dir: string, model: ServedModel): PreparedAdapter;
  evictAdapter(key: string): boolean;
  /** Devices of the models loaded so far, by id (a model loaded at two precisions runs on one device). */
  loadedDevices(): Map<string, Device>;
  /** The device a model not loaded yet would run on (CUDA when asked for or when its provider is installed). */
  expectedDevice(): Device;
  close(): Promise<void>;
}

const mib = (bytes: number) => Math.round(bytes / 2 ** 20);

export function createModelPool(o: ModelPoolOptions): ModelPool {
  const loaded = new Map<string, Promise<{ served: ServedModel; runner: ModelRunner }>>();
  const devices = new Map<string, Device>();
  const adapters = createAdapterCache(o.adapterCacheBytes);

  /** Resident base-weight bytes (estimated) of every loaded (model, precision), for the load log line. */
  const residentBytes = new Map<string, number>();

  /** The precision base requests get, per model (decided once: it reads the model's config). */
  const basePrecisions = new Map<string, Precision>();

  async function load(id: string, precision: Precision) {
    const dir = readModelDir(join(o.modelsDir, id));
    const tokenizer = loadTokenizer(dir.dir);
    const runner = await createModelRunner({
      modelDir: dir.dir,
      cacheDir: join(o.cacheDir, id),
      config: dir.config,
      contextLength: dir.contextLength,
      precision,
      device: o.device,
      threads: o.threads,
      log: o.log,
    });
    const scheduler = createScheduler(runner, { decoder: tokenizer, eosTokenIds: tokenizer.eosTokenIds, contextLength: dir.contextLength, maxBatch: o.maxBatch });
    const served: ServedModel = {
      id,
      precision,
      config: dir.config,
      contextLength: dir.contextLength,
      tokenizer,
      template: compileChatTemplate(tokenizer.chatTemplate, tokenizer),
      device: runner.device,
      scheduler,
    };
    devices.set(id, runner.device);
    // Each (model, precision) is its own session with its own weights: two precisions of one model add up.
    residentBytes.set(`${id}@${precision}`, baseWeightBytes(dir.config, precision).total);
    const total = [...residentBytes.values()].reduce((a, b) => a + b, 0);
    o.log?.(`serving ${id} at ${precision} on ${runner.device} (context ${dir.contextLength}; base weights ~${mib(residentBytes.get(`${id}@${precision}`)!)} MiB, all loaded models ~${mib(total)} MiB)`);
    return { served, runner };
  }

  return {
    async model(id, precision) {
      if (!MODEL_ID_PATTERN.test(id)) throw new Error(`not a model id: ${id}`);
      let at = precision ?? basePrecisions.get(id);
      if (!at) basePrecisions.set(id, (at = servingPrecision(readModelDir(join(o.modelsDir, id)).config, o.basePrecision ?? 'auto')));
      const key = `${id}@${at}`;
      let p = loaded.get(key);
      if (!p) {
        p = load(id, at);
        loaded.set(key, p);
        p.catch(() => loaded.delete(key)); // a failed load is retried by the next request
      }
      return (await p).served;
    },
    adapter: (key, dir, model) => adapters.get(key, dir, model.config),
    evictAdapter: (key) => adapters.evict(key),
    loadedDevices: () => new Map(devices),
    expectedDevice() {
      const want = o.device ?? requestedDevice();
      return want === 'cuda' || (want === 'auto' && existsSync(cudaProviderPath())) ? 'cuda' : 'cpu';
    },
    async close() {
      const all = await Promise.allSettled(loaded.values());
      loaded.clear();
      await Promise.all(all.flatMap((r) => (r.status === 'fulfilled' ? [r.value.runner.close()] : [])));
    },
  };
}
