// Full logits for given token ids (with or without an adapter): the engine's output for comparison with independent implementations.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { parseModelConfig, type ModelConfig } from '../models/config.ts';
import { attentionBias } from '../models/llama.ts';
import { ensureWeightCache } from '../models/weight-cache.ts';
import type { Precision } from '../models/quantize.ts';
import { createSession, type DeviceRequest } from '../onnx/session.ts';
import { cachedGraph } from '../onnx/graph-cache.ts';
import { cachedWeights } from '../models/weight-source.ts';
import { buildLogitsGraph, IO, loraSpecs } from './graphs.ts';
import type { LoraConfig } from '../lora/config.ts';
import type { AdapterTensors } from '../lora/init.ts';

export interface LogitsOptions {
  modelDir: string;
  cacheDir: string;
  /** Token ids per row (rows may differ in length; they are right-padded and masked). */
  tokens: number[][];
  adapter?: { lora: LoraConfig; tensors: AdapterTensors };
  /** The base weights' precision (default fp32). */
  precision?: Precision;
  device?: DeviceRequest;
}

/** Logits [len_b, V] for every row b, row-major in one Float32Array per row. */
export async function computeLogits(o: LogitsOptions): Promise<{ config: ModelConfig; logits: Float32Array[] }> {
  const config = parseModelConfig(JSON.parse(readFileSync(join(o.modelDir, 'config.json'), 'utf8')));
  const cache = ensureWeightCache(o.modelDir, o.cacheDir, { dtype: 'float32', precision: o.precision });
  const B = o.tokens.length;
  const T = Math.max(...o.tokens.map((r) => r.length));
  if (B === 0 || T === 0) throw new Error('computeLogits: no tokens');
  const lora = o.adapter?.lora ?? null;
  const path = cachedGraph(dirname(cache.dataPath), 'logits', { weights: cache.manifest.fingerprint, dtype: cache.manifest.dtype, precision: cache.manifest.precision, rows: B, seqLen: T, lora }, () => buildLogitsGraph(config, cachedWeights(cache), lora, B, T));
  const session = await createSession(path, { device: o.device });
  const ids = new Int32Array(B * T);
  const mask = new Float32Array(B * T);
  o.tokens.forEach((row, b) =>
    row.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new Error(`token id ${id} is outside the vocabulary (${config.vocabSize})`);
      ids[b * T + t] = id;
      mask[b * T + t] = 1;
    }),
  );
  const feeds: Record<string, ort.Tensor> = {
    [IO.inputIds]: new ort.Tensor('int32', ids, [B, T]),
    [IO.attentionBias]: new ort.Tensor('float32', attentionBias(B, T, mask, 0, config.slidingWindow), [B, 1, 1, T, T]),
  };
  if (o.adapter) for (const p of loraSpecs(config, o.adapter.lora)) feeds[p.name] = new ort.Tensor('float32', o.adapter.tensors.get(p.name)!.data, p.dims);
  const out = (await session.run(feeds)).logits.data as Float32Array;
  await session.close();
  const V = config.vocabSize;
  return { config, logits: o.tokens.map((row, b) => out.slice(b * T * V, (b * T + row.length) * V)) };
}
