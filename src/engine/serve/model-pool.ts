// The served base models: each loaded on first request (tokenizer, chat template, one session, one scheduler) and shared by all its adapters.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { compileChatTemplate, type ChatTemplate } from '../models/chat-template.ts';
import type { ModelConfig } from '../models/config.ts';
import { readModelDir } from '../models/model-dir.ts';
import { MODEL_ID_PATTERN } from '../models/registry.ts';
import { replyFormatOf, replyMarkers } from '../models/reply-format.ts';
import { loadTokenizer, type ModelTokenizer } from '../models/tokenizer.ts';
import { cudaProviderPath, requestedDevice, type Device, type DeviceRequest } from '../onnx/session.ts';
import { createAdapterCache, type PreparedAdapter } from './adapter-cache.ts';
import { createGrammarEngine, type GrammarEngine } from './grammar/grammar-engine.ts';
import { createModelRunner, type ModelRunner } from './model-runner.ts';
import { createGenerationScheduler, type GenerationScheduler } from './scheduler.ts';

export interface ServedModel {
  id: string;
  config: ModelConfig;
  contextLength: number;
  tokenizer: ModelTokenizer;
  template: ChatTemplate;
  device: Device;
  scheduler: GenerationScheduler;
  /** Structured outputs: reply grammars compiled against this model's vocabulary. */
  grammars: GrammarEngine;
}

export interface ModelPoolOptions {
  modelsDir: string;
  /** Per-model cache folders (weights, graphs) go under `<cacheDir>/<model id>`. */
  cacheDir: string;
  adapterCacheBytes: number;
  maxBatch: number;
  device?: DeviceRequest;
  threads?: number;
  log?: (line: string) => void;
}

export interface ModelPool {
  /** The base model `id` (a directory under modelsDir), loaded on first use. Throws if it is not a usable model. */
  model(id: string): Promise<ServedModel>;
  /** The adapter stored in `dir` for `model`, cached under `key` (e.g. its ft: id). */
  adapter(key: string, dir: string, model: ServedModel): PreparedAdapter;
  evictAdapter(key: string): boolean;
  /** Devices of the models loaded so far, by id. */
  loadedDevices(): Map<string, Device>;
  /** The device a model not loaded yet would run on (CUDA when asked for or when its provider is installed). */
  expectedDevice(): Device;
  close(): Promise<void>;
}

export function createModelPool(o: ModelPoolOptions): ModelPool {
  const loaded = new Map<string, Promise<{ served: ServedModel; runner: ModelRunner }>>();
  const devices = new Map<string, Device>();
  const adapters = createAdapterCache(o.adapterCacheBytes);

  async function load(id: string) {
    if (!MODEL_ID_PATTERN.test(id)) throw new Error(`not a model id: ${id}`);
    const dir = readModelDir(join(o.modelsDir, id));
    const tokenizer = loadTokenizer(dir.dir);
    const runner = await createModelRunner({
      modelDir: dir.dir,
      cacheDir: join(o.cacheDir, id),
      config: dir.config,
      contextLength: dir.contextLength,
      device: o.device,
      threads: o.threads,
      log: o.log,
    });
    const template = compileChatTemplate(tokenizer.chatTemplate, tokenizer);
    const scheduler = createGenerationScheduler(runner, { modelId: id, log: o.log, decoder: tokenizer, eosTokenIds: tokenizer.eosTokenIds, contextLength: dir.contextLength, maxBatch: o.maxBatch });
    const served: ServedModel = {
      id,
      config: dir.config,
      contextLength: dir.contextLength,
      tokenizer,
      template,
      device: runner.device,
      scheduler,
      grammars: createGrammarEngine(tokenizer, { vocabSize: dir.config.vocabSize, markers: replyMarkers(replyFormatOf(template.source)) }),
    };
    devices.set(id, runner.device);
    o.log?.(`serving ${id} on ${runner.device} (context ${dir.contextLength})`);
    return { served, runner };
  }

  return {
    async model(id) {
      let p = loaded.get(id);
      if (!p) {
        p = load(id);
        loaded.set(id, p);
        p.catch(() => loaded.delete(id)); // a failed load is retried by the next request
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
