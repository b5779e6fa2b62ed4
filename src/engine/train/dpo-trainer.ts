// The DPO trainer: preference micro-batches through the DPO loss graph, on the shared trainer core, against fixed reference log-probabilities.
import * as ort from 'onnxruntime-node';
import type { PreferenceBatch } from './batch.ts';
import { batchFeeds, bucketOf } from './feeds.ts';
import { buildDpoGraph, IO, type Bucket } from './graphs.ts';
import { copyTensors, createTrainerCore, type AdapterTrainer, type TrainerOptions } from './trainer-core.ts';
import type { AdapterTensors } from '../lora/init.ts';

export interface DpoTrainerOptions extends TrainerOptions {
  /** The reward scale β of the DPO loss, in (0, 2]. */
  beta: number;
  /** Weight α ≥ 0 of the preferred outputs' mean per-token NLL added to the loss (RPO); default 0, plain DPO. */
  rpoAlpha?: number;
  /**
   * The reference model's adapter, held fixed; default: the adapter training starts from (the bare base for a fresh
   * one, whose B is zero). A resumed run passes its checkpoint as `adapter` and the job's starting adapter here.
   */
  referenceAdapter?: AdapterTensors;
}

/**
 * Reference log-probabilities of a set of pairs: [2p] is pair p's preferred output, [2p + 1] its non-preferred one,
 * each summed over the output's weighted tokens under the reference model.
 */
export type ReferenceLogps = Float64Array;

export interface DpoResult {
  loss: number; // mean over pairs of −log σ(z), z = β((π_c − ref_c) − (π_r − ref_r))
  rewardAccuracy: number; // share of pairs with z > 0 (the preferred output's implicit reward is higher)
  rewardMargin: number; // mean z: the chosen reward minus the rejected reward, β-scaled
  accuracy: number; // mean token accuracy on the preferred outputs
  preferredNll: number; // mean over pairs of the preferred output's mean per-token NLL under the policy (RPO's term)
  /**
   * Mean over pairs of (π_c − ref_c)/n_c: how much more (> 0) or less (< 0) likely, in nats per token, the policy makes
   * the preferred outputs than the reference does. DPO can widen the margin while pushing both outputs down; far below 0
   * the preferred answers themselves are being lost.
   */
  preferredLogpShift: number;
  pairs: number;
  tokens: number; // weighted tokens, both outputs of every pair
}

export interface DpoStepResult extends DpoResult {
  step: number; // AdamW steps taken after this one
  gradNorm: number; // before clipping
}

export interface DpoTrainer extends AdapterTrainer {
  /** The reference log-probabilities of `batches`' pairs (forward only, reference adapter): compute once per set of pairs, reuse every step. */
  referenceLogps(batches: PreferenceBatch[], pairCount: number): Promise<ReferenceLogps>;
  /** Gradients of the mean DPO loss over the micro-batches, without an update (verification). */
  gradients(microBatches: PreferenceBatch[], reference: ReferenceLogps): Promise<DpoResult & { grads: AdapterTensors }>;
  trainStep(microBatches: PreferenceBatch[], reference: ReferenceLogps, lr: number): Promise<DpoStepResult>;
  evaluate(batches: PreferenceBatch[], reference: ReferenceLogps): Promise<DpoResult>;
}

export async function createDpoTrainer(o: DpoTrainerOptions): Promise<DpoTrainer> {
  if (!(o.beta > 0 && o.beta <= 2)) throw new Error(`DPO beta must be in (0, 2], got ${o.beta}`);
  const rpoAlpha = o.rpoAlpha ?? 0;
  if (!(rpoAlpha >= 0 && Number.isFinite(rpoAlpha))) throw new Error(`RPO alpha must be a finite number >= 0, got ${o.rpoAlpha}`);
  const core = await createTrainerCore(o);
  const { config } = core.trainer;
  const reference = o.referenceAdapter ? core.checkAdapter(copyTensors(o.referenceAdapter)) : core.trainer.getAdapter();
  const dpoSession = (kind: 'grad' | 'eval', bucket: Bucket) =>
    core.session(`dpo-${kind}`, { bucket, lora: o.lora }, () => buildDpoGraph(kind, config, core.weights, o.lora, bucket));

  const referenceRows = (mb: PreferenceBatch, table: ReferenceLogps): Float32Array => {
    const rows = new Float32Array(mb.batch.rows);
    mb.pairs.forEach((p, i) => {
      if (2 * p + 1 >= table.length) throw new Error(`no reference log-probabilities for pair ${p} (the table holds ${table.length / 2} pairs)`);
      rows[2 * i] = table[2 * p];
      rows[2 * i + 1] = table[2 * p + 1];
    });
    return rows;
  };

  /** One micro-batch through `kind`'s graph; `index` is its place in the step (it picks the dropout masks). */
  async function runGraph(kind: 'grad' | 'eval', mb: PreferenceBatch, index: number, referenceRowLogps: Float32Array, adapter?: AdapterTensors) {
    if (mb.batch.rows !== 2 * mb.pairs.length) throw new Error(`a preference micro-batch of ${mb.pairs.length} pairs must hold ${2 * mb.pairs.length} rows, not ${mb.batch.rows}`);
    const bucket = bucketOf(mb.batch);
    return (await dpoSession(kind, bucket)).run({
      ...batchFeeds(mb.batch, bucket, 'float32', config.slidingWindow),
      ...core.loraFeeds(adapter),
      ...(kind === 'grad' ? core.dropoutFeeds(index, mb.batch.rows * mb.batch.seqLen) : {}),
      [IO.referenceLogps]: new ort.Tensor('float32', referenceRowLogps, [mb.batch.rows]),
      [IO.beta]: new ort.Tensor('float32', Float32Array.of(o.beta), []),
      ...(kind === 'grad' ? { [IO.rpoAlpha]: new ort.Tensor('float32', Float32Array.of(rpoAlpha), []) } : {}),
    });
  }

  /** Runs `kind`'s graph on every micro-batch; sums the pair metrics and (kind 'grad') the unnormalised gradients. */
  async function run(kind: 'grad' | 'eval', microBatches: PreferenceBatch[], table: ReferenceLogps) {
    if (microBatches.length === 0) throw new Error(`${kind === 'grad' ? 'a DPO step' : 'evaluate'} needs at least one preference micro-batch`);
    const grads = core.zeros();
    const sum = { loss: 0, rewardCorrect: 0, rewardMargin: 0, correct: 0, preferredTokens: 0, preferredNll: 0, preferredShift: 0, pairs: 0, tokens: 0 };
    for (const [index, mb] of microBatches.entries()) {
      const referenceRowLogps = referenceRows(mb, table);
      const out = await runGraph(kind, mb, index, referenceRowLogps);
      if (kind === 'grad') core.addGradients(grads, out);
      const value = (name: string) => (out[name].data as Float32Array)[0];
      sum.loss += value(IO.lossSum);
      sum.rewardCorrect += value(IO.rewardCorrectSum);
      sum.rewardMargin += value(IO.rewardMarginSum);
      sum.correct += value(IO.correctSum);
      sum.preferredNll += value(IO.preferredNllSum);
      sum.pairs += mb.pairs.length;
      const logps = out[IO.sequenceLogps].data as Float32Array; // [B]
      const { rows, seqLen, lossWeights } = mb.batch;
      for (let r = 0; r < rows; r++) {
        let rowWeight = 0;
        for (let t = 0; t < seqLen; t++) {
          const w = lossWeights[r * seqLen + t];
          if (w <= 0) continue;
          sum.tokens++;
          rowWeight += w;
        }
        if (r % 2 === 0) {
          sum.preferredTokens += rowWeight;
          sum.preferredShift += (logps[r] - referenceRowLogps[r]) / Math.max(rowWeight, 1);
        }
      }
    }
    const result: DpoResult = {
      loss: sum.loss / sum.pairs,
      rewardAccuracy: sum.rewardCorrect / sum.pairs,
      rewardMargin: sum.rewardMargin / sum.pairs,
      accuracy: sum.preferredTokens > 0 ? sum.correct / sum.preferredTokens : 0,
      preferredNll: sum.preferredNll / sum.pairs,
      preferredLogpShift: sum.preferredShift / sum.pairs,
      pairs: sum.pairs,
      tokens: sum.tokens,
    };
    return { result, grads };
  }

  return Object.assign(core.trainer, {
    async referenceLogps(batches: PreferenceBatch[], pairCount: number) {
      const table: ReferenceLogps = new Float64Array(2 * pairCount).fill(NaN);
      for (const mb of batches) {
        // The eval graph under the reference adapter; its reference input is unused for π, so zeros do.
        const out = await runGraph('eval', mb, 0, new Float32Array(mb.batch.rows), reference);
        const logps = out[IO.sequenceLogps].data as Float32Array;
        mb.pairs.forEach((p, i) => {
          table[2 * p] = logps[2 * i];
          table[2 * p + 1] = logps[2 * i + 1];
        });
      }
      const missing = table.findIndex((v) => Number.isNaN(v));
      if (missing >= 0) throw new Error(`referenceLogps: the batches do not cover pair ${missing >> 1} of ${pairCount}`);
      return table;
    },
    async gradients(microBatches: PreferenceBatch[], table: ReferenceLogps) {
      const { result, grads } = await run('grad', microBatches, table);
      for (const g of grads.values()) for (let i = 0; i < g.data.length; i++) g.data[i] /= result.pairs;
      return { ...result, grads };
    },
    async trainStep(microBatches: PreferenceBatch[], table: ReferenceLogps, lr: number) {
      const { result, grads } = await run('grad', microBatches, table);
      // The AdamW graph divides the summed gradients by this: the loss is a mean over pairs.
      const { step, gradNorm } = await core.update(grads, result.pairs, lr);
      return { ...result, step, gradNorm };
    },
    async evaluate(batches: PreferenceBatch[], table: ReferenceLogps) {
      return (await run('eval', batches, table)).result;
    },
  });
}
