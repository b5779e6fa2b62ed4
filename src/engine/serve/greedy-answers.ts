// Greedy answers to tokenized prompts through the serving path (generation graph, continuous batching, sampler), for
// judging an adapter outside an HTTP request: a training job's generation-based validation.
import { basename } from 'node:path';
import type { ModelConfig } from '../models/config.ts';
import type { ModelTokenizer } from '../models/tokenizer.ts';
import type { DeviceRequest } from '../onnx/session.ts';
import type { LoraConfig } from '../lora/config.ts';
import type { AdapterTensors } from '../lora/init.ts';
import { prepareAdapterTensors } from './adapter-cache.ts';
import { createModelRunner } from './model-runner.ts';
import { createGenerationScheduler } from './scheduler.ts';
import type { SamplingParams } from './sampler.ts';

export interface GreedyAnswerOptions {
  modelDir: string;
  cacheDir: string;
  config: ModelConfig;
  contextLength: number;
  tokenizer: ModelTokenizer;
  /** Prompts decoded together at most. */
  maxBatch: number;
  device?: DeviceRequest;
  threads?: number;
  log?: (line: string) => void;
}

export interface AnswerPrompt {
  /** The rendered conversation up to and including the generation prompt. */
  prompt: Int32Array;
  /** Most tokens to generate. */
  maxTokens: number;
}

export interface GreedyAnswerer {
  /** Each prompt's temperature-0 answer (up to the end of turn or maxTokens) under base + `adapter`. */
  answer(prompts: AnswerPrompt[], adapter: { lora: LoraConfig; tensors: AdapterTensors } | null): Promise<string[]>;
  close(): Promise<void>;
}

const GREEDY: SamplingParams = { temperature: 0, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed: 0 };

export async function createGreedyAnswerer(o: GreedyAnswerOptions): Promise<GreedyAnswerer> {
  const runner = await createModelRunner({ modelDir: o.modelDir, cacheDir: o.cacheDir, config: o.config, contextLength: o.contextLength, device: o.device, threads: o.threads, log: o.log });
  const scheduler = createGenerationScheduler(runner, { modelId: basename(o.modelDir), log: o.log, decoder: o.tokenizer, eosTokenIds: o.tokenizer.eosTokenIds, contextLength: o.contextLength, maxBatch: o.maxBatch });
  let version = 0;
  return {
    async answer(prompts, adapter) {
      // A fresh key per call: the runner caches adapter inputs by key, and the trained tensors change between calls.
      const prepared = adapter ? prepareAdapterTensors(`answers-${++version}`, adapter.lora, adapter.tensors, o.config) : null;
      const results = await Promise.all(
        prompts.map((p) => {
          const room = o.contextLength - p.prompt.length;
          if (room < 1) return { text: '' };
          return scheduler.submit({ prompt: Array.from(p.prompt), adapter: prepared, sampling: GREEDY, maxTokens: Math.min(p.maxTokens, room), stop: [] });
        }),
      );
      return results.map((r) => r.text);
    },
    close: () => runner.close(),
  };
}
