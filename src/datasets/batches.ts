// Training batches: tokenized examples → shuffled optimizer steps of fixed-shape micro-batches, resumable at any step.
import { seqLenBucket, type TrainBatch } from '../engine/train/batch.ts';
import { epochOrder } from './shuffle.ts';
import type { TokenizedExample } from './tokenize-example.ts';

/** A place in training: `step` optimizer steps of epoch `epoch` are done (both count from 0). */
export interface BatchPosition {
  epoch: number;
  step: number;
}

export interface BatchPlan {
  examples: TokenizedExample[];
  /** Examples per optimizer step (the job's batch_size). */
  batchSize: number;
  /** Rows per micro-batch: a step's examples run as ceil(batchSize / microBatchRows) micro-batches, gradients summed. */
  microBatchRows: number;
  /** Longer examples lose their end (as the hosted service truncates). */
  contextLength: number;
  seed: number;
  epochs: number;
  padTokenId?: number;
}

/** One optimizer step: its position, the examples it holds, and their micro-batches. */
export interface TrainStep {
  epoch: number;
  step: number;
  /** Steps done before this one over the whole run: epoch * stepsPerEpoch + step. */
  globalStep: number;
  exampleIndices: number[];
  microBatches: TrainBatch[];
  /** Sum of lossWeights over the step's micro-batches (the loss normalizer). */
  trainedTokens: number;
}

/** Optimizer steps per epoch; the last step of an epoch holds the remainder when batchSize does not divide n. */
export function stepsPerEpoch(nExamples: number, batchSize: number): number {
  return Math.ceil(nExamples / batchSize);
}

/** The position after `at` (the start of the next epoch after an epoch's last step). */
export function nextPosition(at: BatchPosition, nExamples: number, batchSize: number): BatchPosition {
  return at.step + 1 < stepsPerEpoch(nExamples, batchSize) ? { epoch: at.epoch, step: at.step + 1 } : { epoch: at.epoch + 1, step: 0 };
}

/**
 * The steps from `from` to the end of training. Each epoch visits the examples in the order fixed by (seed, epoch), so
 * starting at a saved position yields exactly the steps an uninterrupted run would have produced from there.
 * Within a step, examples are grouped by length so each micro-batch pads to as small a bucket as possible.
 */
export function* trainSteps(plan: BatchPlan, from: BatchPosition = { epoch: 0, step: 0 }): Generator<TrainStep> {
  const n = plan.examples.length;
  const perEpoch = stepsPerEpoch(n, plan.batchSize);
  for (let epoch = from.epoch; epoch < plan.epochs; epoch++) {
    const order = epochOrder(n, plan.seed, epoch);
    for (let step = epoch === from.epoch ? from.step : 0; step < perEpoch; step++) {
      const exampleIndices = Array.from(order.subarray(step * plan.batchSize, (step + 1) * plan.batchSize));
      const byLength = [...exampleIndices].sort((a, b) => plan.examples[a]!.ids.length - plan.examples[b]!.ids.length || a - b);
      const microBatches: TrainBatch[] = [];
      for (let i = 0; i < byLength.length; i += plan.microBatchRows) {
        const rows = byLength.slice(i, i + plan.microBatchRows).map((k) => plan.examples[k]!);
        microBatches.push(buildMicroBatch(rows, plan.contextLength, plan.padTokenId ?? 0));
      }
      const trainedTokens = microBatches.reduce((sum, b) => sum + b.lossWeights.reduce((s, w) => s + w, 0), 0);
      yield { epoch, step, globalStep: epoch * perEpoch + step, exampleIndices, microBatches, trainedTokens };
    }
  }
}

/**
 * Examples → one right-padded micro-batch, T the bucket of the longest (truncated) example.
 * Position t predicts token t+1: labels[b, t] = ids[t+1], weighted by that token's weight.
 */
export function buildMicroBatch(examples: TokenizedExample[], contextLength: number, padTokenId: number): TrainBatch {
  const B = examples.length;
  const longest = Math.max(...examples.map((e) => Math.min(e.ids.length, contextLength)));
  const T = seqLenBucket(longest, contextLength);
  const inputIds = new Int32Array(B * T).fill(padTokenId); // [B*T]
  const labels = new Int32Array(B * T); // [B*T]
  const lossWeights = new Float32Array(B * T); // [B*T]
  const attentionMask = new Float32Array(B * T); // [B*T]
  examples.forEach((e, b) => {
    const len = Math.min(e.ids.length, T);
    const row = b * T;
    inputIds.set(e.ids.subarray(0, len), row);
    attentionMask.fill(1, row, row + len);
    for (let t = 0; t + 1 < len; t++) {
      if (e.weights[t + 1] === 1) {
        labels[row + t] = e.ids[t + 1]!;
        lossWeights[row + t] = 1;
      }
    }
  });
  return { rows: B, seqLen: T, inputIds, labels, lossWeights, attentionMask };
}
