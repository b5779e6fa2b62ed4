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

/** Sequence-length buckets: training graphs are built for these fixed shapes only (symbolic dims are 2x slower). */
export function seqLenBucket(tokens: number, contextLength: number): number {
  let t = 64;
  while (t < tokens && t < contextLength) t *= 2;
  return Math.min(t, contextLength);
}
