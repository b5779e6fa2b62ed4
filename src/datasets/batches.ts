// Training batches: tokenized examples or preference pairs → shuffled optimizer steps of fixed-shape micro-batches, resumable at any step.
import { seqLenBucket, type PreferenceBatch, type TrainBatch } from '../engine/train/batch.ts';
import { epochOrder } from './shuffle.ts';
import type { TokenizedExample, TokenizedPreference } from './tokenize-example.ts';

/** A place in training: `step` optimizer steps of epoch `epoch` are done (both count from 0). */
export interface BatchPosition {
  epoch: number;
  step: number;
}

export interface BatchPlan<E = TokenizedExample> {
  /** The training units: chat examples, or preference pairs (see preferenceSteps). */
  examples: E[];
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
export interface Step<B> {
  epoch: number;
  step: number;
  /** Steps done before this one over the whole run: epoch * stepsPerEpoch + step. */
  globalStep: number;
  exampleIndices: number[];
  microBatches: B[];
  /** Sum of lossWeights over the step's micro-batches (the loss normalizer of a supervised step). */
  trainedTokens: number;
}

export type TrainStep = Step<TrainBatch>;
export type PreferenceStep = Step<PreferenceBatch>;

/** Optimizer steps per epoch; the last step of an epoch holds the remainder when batchSize does not divide n. */
export function stepsPerEpoch(nExamples: number, batchSize: number): number {
  return Math.ceil(nExamples / batchSize);
}

/** The position after `at` (the start of the next epoch after an epoch's last step). */
export function nextPosition(at: BatchPosition, nExamples: number, batchSize: number): BatchPosition {
  return at.step + 1 < stepsPerEpoch(nExamples, batchSize) ? { epoch: at.epoch, step: at.step + 1 } : { epoch: at.epoch + 1, step: 0 };
}

/** How a kind of training unit becomes micro-batches. */
interface MicroBatching<E, B> {
  /** Sort key within a step, so each micro-batch pads to as small a bucket as possible. */
  length: (example: E) => number;
  perMicroBatch: number;
  build: (indices: number[]) => B;
  trainBatch: (microBatch: B) => TrainBatch;
}

/**
 * The steps from `from` to the end of training. Each epoch visits the examples in the order fixed by (seed, epoch), so
 * starting at a saved position yields exactly the steps an uninterrupted run would have produced from there.
 * Within a step, examples are sorted by length and cut into micro-batches.
 */
function* steps<E, B>(plan: BatchPlan<E>, from: BatchPosition, m: MicroBatching<E, B>): Generator<Step<B>> {
  const n = plan.examples.length;
  const perEpoch = stepsPerEpoch(n, plan.batchSize);
  for (let epoch = from.epoch; epoch < plan.epochs; epoch++) {
    const order = epochOrder(n, plan.seed, epoch);
    for (let step = epoch === from.epoch ? from.step : 0; step < perEpoch; step++) {
      const exampleIndices = Array.from(order.subarray(step * plan.batchSize, (step + 1) * plan.batchSize));
      const byLength = [...exampleIndices].sort((a, b) => m.length(plan.examples[a]!) - m.length(plan.examples[b]!) || a - b);
      const microBatches: B[] = [];
      for (let i = 0; i < byLength.length; i += m.perMicroBatch) microBatches.push(m.build(byLength.slice(i, i + m.perMicroBatch)));
      const trainedTokens = microBatches.reduce((sum, b) => sum + m.trainBatch(b).lossWeights.reduce((s, w) => s + w, 0), 0);
      yield { epoch, step, globalStep: epoch * perEpoch + step, exampleIndices, microBatches, trainedTokens };
    }
  }
}

/** Supervised steps: micro-batches of up to microBatchRows examples. */
export function trainSteps(plan: BatchPlan, from: BatchPosition = { epoch: 0, step: 0 }): Generator<TrainStep> {
  return steps(plan, from, {
    length: (e) => e.ids.length,
    perMicroBatch: plan.microBatchRows,
    build: (indices) =>
      buildMicroBatch(
        indices.map((k) => plan.examples[k]!),
        plan.contextLength,
        plan.padTokenId ?? 0,
      ),
    trainBatch: (b) => b,
  });
}

/**
 * DPO steps: `examples` are preference pairs and batchSize counts pairs. A pair's two sequences always share a
 * micro-batch (rows 2i and 2i+1), microBatchRows / 2 pairs per micro-batch (at least one).
 */
export function preferenceSteps(plan: BatchPlan<TokenizedPreference>, from: BatchPosition = { epoch: 0, step: 0 }): Generator<PreferenceStep> {
  return steps(plan, from, {
    length: pairLength,
    perMicroBatch: Math.max(1, Math.floor(plan.microBatchRows / 2)),
    build: (indices) => buildPreferenceBatch(plan.examples, indices, plan.contextLength, plan.padTokenId ?? 0),
    trainBatch: (b) => b.batch,
  });
}

/**
 * The pairs `indices` (default: all, in file order), microBatchRows / 2 pairs per micro-batch, in that order: for
 * evaluating validation pairs and for computing reference log-probabilities (the same batches every time, so a
 * resumed run recomputes them exactly).
 */
export function preferenceBatches(
  pairs: TokenizedPreference[],
  microBatchRows: number,
  contextLength: number,
  padTokenId = 0,
  indices: number[] = Array.from(pairs.keys()),
): PreferenceBatch[] {
  const perBatch = Math.max(1, Math.floor(microBatchRows / 2));
  const out: PreferenceBatch[] = [];
  for (let i = 0; i < indices.length; i += perBatch) out.push(buildPreferenceBatch(pairs, indices.slice(i, i + perBatch), contextLength, padTokenId));
  return out;
}

const pairLength = (p: TokenizedPreference) => p.promptIds.length + Math.max(p.chosen.ids.length, p.rejected.ids.length);

/** A pair's sequence: the prompt (weight 0) followed by one output (weighted like a trained assistant message). */
export function preferenceSequence(promptIds: Int32Array, output: TokenizedExample): TokenizedExample {
  const ids = new Int32Array(promptIds.length + output.ids.length);
  ids.set(promptIds);
  ids.set(output.ids, promptIds.length);
  const weights = new Uint8Array(ids.length);
  weights.set(output.weights, promptIds.length);
  return { ids, weights };
}

function buildPreferenceBatch(pairs: TokenizedPreference[], indices: number[], contextLength: number, padTokenId: number): PreferenceBatch {
  const rows = indices.flatMap((k) => [preferenceSequence(pairs[k]!.promptIds, pairs[k]!.chosen), preferenceSequence(pairs[k]!.promptIds, pairs[k]!.rejected)]);
  return { batch: buildMicroBatch(rows, contextLength, padTokenId), pairs: indices };
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
