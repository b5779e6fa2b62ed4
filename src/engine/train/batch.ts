// The micro-batch the trainer consumes: the one shape shared by the data pipeline and the engine.

/**
 * One fixed-shape micro-batch, row-major `[B, T]` (B = rows, T = seqLen).
 * Rows are right-padded; a padded position has attentionMask 0 and lossWeight 0.
 * Position t predicts labels[b, t] = inputIds[b, t + 1] (the next token), counted with weight lossWeights[b, t].
 */
export interface TrainBatch {
  rows: number; // B
  seqLen: number; // T, one of seqLenBuckets()
  inputIds: Int32Array; // [B*T]
  labels: Int32Array; // [B*T], 0 where the weight is 0
  lossWeights: Float32Array; // [B*T], 1 on trained assistant tokens' predictions, 0 elsewhere
  attentionMask: Float32Array; // [B*T], 1 on real tokens, 0 on padding
}

/**
 * A DPO micro-batch: rows 2i and 2i+1 hold pair `pairs[i]`'s preferred and non-preferred sequence (the prompt,
 * unweighted, then the output, weighted), so both sides of a pair always run in the same graph.
 */
export interface PreferenceBatch {
  batch: TrainBatch;
  /** The pairs' indices in their file (where their reference log-probabilities are kept). */
  pairs: number[];
}

/** Sequence-length buckets: training graphs are built for these fixed shapes only (symbolic dims are 2x slower). */
export function seqLenBucket(tokens: number, contextLength: number): number {
  let t = 64;
  while (t < tokens && t < contextLength) t *= 2;
  return Math.min(t, contextLength);
}
