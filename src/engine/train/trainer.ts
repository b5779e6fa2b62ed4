// The supervised trainer: micro-batch gradient graphs of the masked token cross-entropy, on the shared trainer core.
import type { TrainBatch } from './batch.ts';
import { batchFeeds, bucketOf, weightSum } from './feeds.ts';
import { buildLossGraph, IO, type Bucket } from './graphs.ts';
import { createTrainerCore, type AdapterTrainer, type TrainerOptions } from './trainer-core.ts';
import type { AdapterTensors } from '../lora/init.ts';

export { DEFAULT_ADAMW, type AdapterTrainer, type OptimizerState, type TrainerOptions } from './trainer-core.ts';

export interface StepResult {
  step: number; // AdamW steps taken after this one
  loss: number; // Σ w·ce / Σ w over the micro-batches
  accuracy: number; // Σ w·[argmax = label] / Σ w
  tokens: number; // weighted (trained) tokens
  gradNorm: number; // before clipping
}

export interface EvalResult {
  loss: number;
  accuracy: number;
  tokens: number;
}

export interface GradientResult {
  loss: number;
  accuracy: number;
  tokens: number;
  grads: AdapterTensors; // ∂(mean loss)/∂ each LoRA tensor, PEFT names
}

export interface Trainer extends AdapterTrainer {
  /** Gradients of the mean loss over the micro-batches, without an update (verification). */
  gradients(microBatches: TrainBatch[]): Promise<GradientResult>;
  trainStep(microBatches: TrainBatch[], lr: number): Promise<StepResult>;
  evaluate(batches: TrainBatch[]): Promise<EvalResult>;
}

export async function createTrainer(o: TrainerOptions): Promise<Trainer> {
  const core = await createTrainerCore(o);
  const { config } = core.trainer;
  const lossSession = (kind: 'grad' | 'eval', bucket: Bucket) =>
    core.session(kind, { bucket, lora: o.lora }, () => buildLossGraph(kind, config, core.weights, o.lora, bucket));

  /** Runs `kind`'s graph on every micro-batch; sums losses, hits, weights and (kind 'grad') the unnormalised gradients. */
  async function run(kind: 'grad' | 'eval', microBatches: TrainBatch[]) {
    if (microBatches.length === 0) throw new Error(`${kind === 'grad' ? 'a training step' : 'evaluate'} needs at least one micro-batch`);
    const grads = core.zeros();
    let lossSum = 0;
    let correctSum = 0;
    let wsum = 0;
    let tokens = 0;
    for (const [index, mb] of microBatches.entries()) {
      const bucket = bucketOf(mb);
      const feeds = { ...batchFeeds(mb, bucket, 'float32', config.slidingWindow), ...core.loraFeeds(), ...(kind === 'grad' ? core.dropoutFeeds(index, mb.rows * mb.seqLen) : {}) };
      const out = await (await lossSession(kind, bucket)).run(feeds);
      if (kind === 'grad') core.addGradients(grads, out);
      lossSum += (out[IO.lossSum].data as Float32Array)[0];
      correctSum += (out[IO.correctSum].data as Float32Array)[0];
      wsum += weightSum(mb);
      for (const w of mb.lossWeights) if (w > 0) tokens++;
    }
    if (wsum <= 0) throw new Error('the micro-batches carry no loss weight (no trained tokens)');
    return { loss: lossSum / wsum, accuracy: correctSum / wsum, tokens, weightSum: wsum, grads };
  }

  return Object.assign(core.trainer, {
    async gradients(microBatches: TrainBatch[]) {
      const { weightSum: wsum, grads, ...rest } = await run('grad', microBatches);
      for (const g of grads.values()) for (let i = 0; i < g.data.length; i++) g.data[i] /= wsum;
      return { ...rest, grads };
    },
    async trainStep(microBatches: TrainBatch[], lr: number) {
      const { loss, accuracy, tokens, weightSum: wsum, grads } = await run('grad', microBatches);
      const { step, gradNorm } = await core.update(grads, wsum, lr);
      return { step, loss, accuracy, tokens, gradNorm };
    },
    async evaluate(batches: TrainBatch[]) {
      const { loss, accuracy, tokens } = await run('eval', batches);
      return { loss, accuracy, tokens };
    },
  });
}
