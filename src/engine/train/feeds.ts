// Turns a TrainBatch into the loss graph's inputs: attention bias, and the weighted rows that reach the LM head.
import * as ort from 'onnxruntime-node';
import type { FloatDType } from '../onnx/graph.ts';
import { attentionBias } from '../models/llama.ts';
import type { TrainBatch } from './batch.ts';
import { IO, type Bucket } from './graphs.ts';

/** Rows reaching the LM head are bucketed too (powers of two from 64, capped at B·T) so sessions are reused. */
export function lossRowsBucket(weightedTokens: number, rows: number, seqLen: number): number {
  let k = 64;
  while (k < weightedTokens) k *= 2;
  return Math.min(k, rows * seqLen);
}

export function bucketOf(batch: TrainBatch): Bucket {
  let weighted = 0;
  for (const w of batch.lossWeights) if (w > 0) weighted++;
  return { rows: batch.rows, seqLen: batch.seqLen, lossRows: lossRowsBucket(weighted, batch.rows, batch.seqLen) };
}

/** Σ loss weights of a batch (the normaliser of its mean loss). */
export function weightSum(batch: TrainBatch): number {
  let s = 0;
  for (const w of batch.lossWeights) s += w;
  return s;
}

function floatTensor(dtype: FloatDType, data: ArrayLike<number>, dims: number[]): ort.Tensor {
  return dtype === 'float64' ? new ort.Tensor('float64', Float64Array.from(data), dims) : new ort.Tensor('float32', data instanceof Float32Array ? data : Float32Array.from(data), dims);
}

/** The five batch inputs of a loss graph built for `bucket` (padding rows of the head: index 0, weight 0). */
export function batchFeeds(batch: TrainBatch, bucket: Bucket, dtype: FloatDType = 'float32', slidingWindow: number | null = null): Record<string, ort.Tensor> {
  const { rows: B, seqLen: T, lossRows: K } = bucket;
  if (batch.rows !== B || batch.seqLen !== T) throw new Error(`batch [${batch.rows}, ${batch.seqLen}] does not fit bucket [${B}, ${T}]`);
  const idx = new BigInt64Array(K);
  const labels = new BigInt64Array(K);
  const weights = new Float64Array(K);
  let k = 0;
  for (let i = 0; i < B * T; i++) {
    if (batch.lossWeights[i] <= 0) continue;
    if (k === K) throw new Error(`batch has more than ${K} weighted tokens (bucket ${B}×${T}, K=${K})`);
    idx[k] = BigInt(i);
    labels[k] = BigInt(batch.labels[i]);
    weights[k++] = batch.lossWeights[i];
  }
  return {
    [IO.inputIds]: new ort.Tensor('int32', batch.inputIds, [B, T]),
    [IO.attentionBias]: floatTensor(dtype, attentionBias(B, T, batch.attentionMask, 0, slidingWindow), [B, 1, 1, T, T]),
    [IO.lossRows]: new ort.Tensor('int64', idx, [K]),
    [IO.lossLabels]: new ort.Tensor('int64', labels, [K]),
    [IO.lossWeights]: floatTensor(dtype, weights, [K]),
  };
}
