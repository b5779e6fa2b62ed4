// The served base models: each loaded on first request (tokenizer, chat template, a runner thread, one scheduler) and shared by all its adapters.
// A base model is loaded once per precision requests need (base requests: the pool's; ft: models: the one they were trained on).
import { existsSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { compileChatTemplate, type ChatTemplate } from '../models/chat-template.ts';
import type { ModelConfig } from '../models/config.ts';
import { readModelDir } from '../models/model-dir.ts';
import { baseWeightBytes } from '../models/memory-estimate.ts';
import { QUANTIZED_LAYOUT } from '../models/weight-cache.ts';
import { savedQuantizedLayout } from '../lora/peft.ts';
import type { Precision } from '../models/quantize.ts';
import { MODEL_ID_PATTERN } from '../models/registry.ts';
import { replyFormatOf, replyMarkers, type ReplyFormat } from '../models/reply-format.ts';
import { loadTokenizer, type ModelTokenizer } from '../models/tokenizer.ts';
import { cudaProviderPath, requestedDevice, type Device, type DeviceRequest } from '../onnx/session.ts';
import { createAdapterCache, type AdapterCacheEvent, type AdapterCacheStats, type PreparedAdapter } from './adapter-cache.ts';
import { createGrammarEngine, type GrammarEngine } from './grammar/grammar-engine.ts';
import { createGenerationScheduler, type GenerationScheduler, type GenerationObserver } from './scheduler.ts';
import { keepingTokens } from './text-stream.ts';
import { startThreadedModelRunner, type ThreadedModelRunner } from './threaded-runner.ts';

export interface ServedModel {
  id: string;
  /** The precision its base weights are held at. */
  precision: Precision;
  config: ModelConfig;
  contextLength: number;
  tokenizer: ModelTokenizer;
  template: ChatTemplate;
  /** How the template writes tool calls and reasoning, which generated text is parsed by. */
  replyFormat: ReplyFormat;
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
  /** The precision base models are served at (default auto: fp32 when its resident weights fit comfortably, else int4). */
  basePrecision?: Precision | 'auto';
  device?: DeviceRequest;
  threads?: number;
  log?: (line: string) => void;
  observe?: ServingObserver;
}

/** Serving events for metrics, labelled with the model a request named (a base model id, or the adapter's key: its ft: id). */
export interface ServingObserver {
  finished(model: string, r: Parameters<NonNullable<GenerationObserver['finished']>>[0]): void;
  decodeStep(baseModel: string, rows: number): void;
  adapterEvent(event: AdapterCacheEvent, key: string): void;
}

/** What the pool holds now, read at scrape time. */
export interface ModelPoolStats {
  models: { id: string; active: number; waiting: number; maxBatch: number }[];
  adapters: AdapterCacheStats;
}

/**
 * Serving's `auto`: fp32 when the model's resident fp32 weights (×2: onnxruntime keeps a packed copy) take at most half
 * of `memoryBytes`, else int4: of the 4-bit kernels only MatMulNBits decodes faster than fp32 (one row: ~4–6× fp32's
 * speed; MatMulBnb4, nf4's, ~3× slower; README "Quantized base models").
 */
export function servingPrecision(config: ModelConfig, requested: Precision | 'auto', memoryBytes = totalmem()): Precision {
  if (requested !== 'auto') return requested;
  return 2 * baseWeightBytes(config, 'fp32').total <= 0.5 * memoryBytes ? 'fp32' : 'int4';
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
  stats(): ModelPoolStats;
  close(): Promise<void>;
}

const mib = (bytes: number) => Math.round(bytes / 2 ** 20);

export function createModelPool(o: ModelPoolOptions): ModelPool {
  const loaded = new Map<string, Promise<{ served: ServedModel; runner: ThreadedModelRunner }>>();
  const ready = new Map<string, { served: ServedModel; runner: ThreadedModelRunner }>();
  const devices = new Map<string, Device>();
  /** Adapters served on a quantized base whose saved layout was checked (once each: it reads the adapter file's header). */
  const layoutChecked = new Set<string>();
  const adapters = createAdapterCache(o.adapterCacheBytes, undefined, (event, key) => {
    // A runner thread keeps its own copy of each adapter it was sent, until the cache lets it go.
    if (event === 'evict') for (const { runner } of ready.values()) runner.forgetAdapter(key);
    o.observe?.adapterEvent(event, key);
  });

  /** Forgets a model (at one precision: `key` is id@precision) whose runner thread died, so the next request loads it again. */
  function unload(id: string, key: string, err: Error) {
    o.log?.(`serving ${key}: ${err.message}; it loads again on its next request`);
    loaded.delete(key);
    ready.delete(key);
    residentBytes.delete(key);
    if (![...ready.values()].some(({ served }) => served.id === id)) devices.delete(id);
  }

  /** Resident base-weight bytes (estimated) of every loaded (model, precision), for the load log line. */
  const residentBytes = new Map<string, number>();

  /** The precision base requests get, per model (decided once: it reads the model's config). */
  const basePrecisions = new Map<string, Precision>();

  async function load(id: string, precision: Precision) {
    const key = `${id}@${precision}`;
    const dir = readModelDir(join(o.modelsDir, id));
    // The runner thread converts weights and builds the session while this thread keeps serving other requests.
    const starting = startThreadedModelRunner({
      modelDir: dir.dir,
      cacheDir: join(o.cacheDir, id),
      config: dir.config,
      contextLength: dir.contextLength,
      precision,
      device: o.device,
      threads: o.threads,
      log: o.log,
      onExit: (err) => unload(id, key, err),
    });
    let tokenizer: ModelTokenizer;
    try {
      tokenizer = loadTokenizer(dir.dir);
    } catch (err) {
      starting.then((r) => r.close(), () => {});
      throw err;
    }
    const runner = await starting;
    const template = compileChatTemplate(tokenizer.chatTemplate, tokenizer);
    const replyFormat = replyFormatOf(template.source);
    const scheduler = createGenerationScheduler(runner, {
      modelId: id,
      log: o.log,
      decoder: keepingTokens(tokenizer, specialMarkerIds(tokenizer, replyMarkers(replyFormat))),
      eosTokenIds: tokenizer.eosTokenIds,
      contextLength: dir.contextLength,
      maxBatch: o.maxBatch,
      observe: o.observe && {
        finished: (r) => o.observe!.finished(r.adapter?.key ?? id, r),
        decodeStep: (rows) => o.observe!.decodeStep(id, rows),
      },
    });
    const served: ServedModel = {
      id,
      precision,
      config: dir.config,
      contextLength: dir.contextLength,
      tokenizer,
      template,
      replyFormat,
      device: runner.device,
      scheduler,
      grammars: createGrammarEngine(tokenizer, { vocabSize: dir.config.vocabSize, markers: replyMarkers(replyFormat) }),
    };
    devices.set(id, runner.device);
    // Each (model, precision) is its own session with its own weights: two precisions of one model add up.
    residentBytes.set(key, baseWeightBytes(dir.config, precision).total);
    const total = [...residentBytes.values()].reduce((a, b) => a + b, 0);
    ready.set(key, { served, runner });
    o.log?.(`serving ${id} at ${precision} on ${runner.device} (context ${dir.contextLength}; base weights ~${mib(residentBytes.get(key)!)} MiB, all loaded models ~${mib(total)} MiB)`);
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
    adapter(key, dir, model) {
      const prepared = adapters.get(key, dir, model.config);
      if (model.precision !== 'fp32' && !layoutChecked.has(key)) {
        layoutChecked.add(key);
        if (savedQuantizedLayout(dir) !== QUANTIZED_LAYOUT) {
          o.log?.(`serving ${key} on ${model.id}'s ${model.precision} base, whose embedding and LM head are quantized since this adapter was saved: it was fitted to fp32 ones, so its outputs differ slightly from its training's (train it again to match)`);
        }
      }
      return prepared;
    },
    evictAdapter: (key) => adapters.evict(key),
    loadedDevices: () => new Map(devices),
    expectedDevice() {
      const want = o.device ?? requestedDevice();
      return want === 'cuda' || (want === 'auto' && existsSync(cudaProviderPath())) ? 'cuda' : 'cpu';
    },
    stats: () => ({
      models: [...ready.values()].map(({ served }) => ({ id: served.id, ...served.scheduler.load(), maxBatch: o.maxBatch })),
      adapters: adapters.stats(),
    }),
    async close() {
      const all = await Promise.allSettled(loaded.values());
      loaded.clear();
      await Promise.all(all.flatMap((r) => (r.status === 'fulfilled' ? [r.value.runner.close()] : [])));
    },
  };
}

/** The markers that are single special tokens of this tokenizer (decoding would drop them), by id. */
function specialMarkerIds(tokenizer: ModelTokenizer, markers: string[]): Map<number, string> {
  const ids = new Map<number, string>();
  for (const marker of markers) {
    const encoded = tokenizer.encode(marker);
    if (encoded.length === 1 && tokenizer.decode(encoded, { skipSpecialTokens: true }) === '') ids.set(encoded[0], marker);
  }
  return ids;
}
