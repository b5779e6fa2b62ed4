// DPO fine-tuning: preference pairs tokenized with the model's template, reference log-probabilities computed once
// under the model the job starts from, seeded pair batches, DPO loss steps with reward metrics.
import { preferenceBatches, preferenceSequence, preferenceSteps, stepsPerEpoch, type BatchPlan } from '../../datasets/batches.ts';
import { tokenizePreferenceFile } from '../../datasets/tokenize-file.ts';
import type { TokenizedPreference } from '../../datasets/tokenize-example.ts';
import { createDpoTrainer, type DpoResult } from '../../engine/train/dpo-trainer.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import { JobFailure, type MethodRun, type ValidationMetrics } from './method.ts';
import { hasTrainedToken, loadMethodModel, microBatchRowsFor, readTrainableFiles, startingAdapter, trainerStateOf, validationSchedule, type MethodSetup } from './method-inputs.ts';

/** Both outputs keep a trained token within the context (a pair without one carries no preference signal). */
const trainable = (p: TokenizedPreference, contextLength: number) => [p.chosen, p.rejected].every((output) => hasTrainedToken(preferenceSequence(p.promptIds, output), contextLength));

export async function prepareDpo(spec: TrainingSpec, log: (line: string) => void): Promise<MethodRun & MethodSetup> {
  const { nEpochs, batchSize, beta } = spec.hyperparameters;
  if (beta === undefined || !(beta > 0 && beta <= 2)) throw new JobFailure('invalid_hyperparameters', `beta must be a number in (0, 2], got ${beta}`, 'hyperparameters.beta');
  const { model, contextLength, chat, padTokenId, baseModelName } = loadMethodModel(spec);

  const { training: pairs, validation } = await readTrainableFiles(
    spec,
    (path) => tokenizePreferenceFile(path, chat),
    (p) => trainable(p, contextLength),
    { items: 'preference pair(s)', requirement: 'has both outputs', truncated: 'sequences' },
    contextLength,
    log,
  );

  // Rows are sequences: a pair takes two, so micro-batches hold at most 2·batch_size rows.
  const longest = Math.max(...pairs.map((p) => p.promptIds.length + Math.max(p.chosen.ids.length, p.rejected.ids.length)));
  const microBatchRows = Math.max(2, microBatchRowsFor(longest, contextLength, 2 * batchSize));
  const plan: BatchPlan<TokenizedPreference> = { examples: pairs, batchSize, microBatchRows, contextLength, seed: spec.seed, epochs: nEpochs, padTokenId };
  const { lora, startAdapter } = startingAdapter(spec, model, log);

  // The reference is the model the job starts from: the start adapter (an ft: model) or the fresh one (B = 0, the bare base).
  const trainer = await createDpoTrainer({ modelDir: spec.modelDir, cacheDir: spec.cacheDir, lora, precision: spec.basePrecision, seed: spec.seed, adapter: startAdapter, beta, device: spec.device, threads: spec.threads, log });
  // Computed before any resumed state is set, from the same batches every time: a resumed job gets exactly these numbers.
  const reference = await trainer.referenceLogps(preferenceBatches(pairs, microBatchRows, contextLength, padTokenId), pairs.length);
  const validBatches = preferenceBatches(validation, microBatchRows, contextLength, padTokenId);
  const validReference = await trainer.referenceLogps(validBatches, validation.length);
  log(`${pairs.length} training pair(s), ${validation.length} validation pair(s); ${microBatchRows} row(s) per micro-batch; beta ${beta}; device ${trainer.device}`);

  const sampleDue = validationSchedule(validation.length, spec.seed, batchSize);
  const metricsOf = (r: DpoResult, prefix: 'valid' | 'full_valid'): ValidationMetrics =>
    prefix === 'valid'
      ? { valid_loss: r.loss, valid_mean_token_accuracy: r.accuracy, valid_reward_accuracy: r.rewardAccuracy, valid_reward_margin: r.rewardMargin }
      : { full_valid_loss: r.loss, full_valid_mean_token_accuracy: r.accuracy };

  return {
    lora,
    baseModelName,
    device: trainer.device,
    stepsPerEpoch: stepsPerEpoch(pairs.length, batchSize),
    epochs: nEpochs,

    *steps(from) {
      for (const s of preferenceSteps(plan, from)) {
        yield {
          epoch: s.epoch,
          step: s.step,
          globalStep: s.globalStep,
          run: async (lr) => {
            const r = await trainer.trainStep(s.microBatches, reference, lr);
            return {
              metrics: { train_loss: r.loss, train_mean_token_accuracy: r.accuracy, train_reward_accuracy: r.rewardAccuracy, train_reward_margin: r.rewardMargin },
              trainedTokens: s.trainedTokens,
            };
          },
        };
      }
    },

    async sampleValidation(globalStep, totalSteps) {
      const sample = sampleDue(globalStep, totalSteps);
      if (!sample) return null;
      return metricsOf(await trainer.evaluate(preferenceBatches(validation, microBatchRows, contextLength, padTokenId, sample), validReference), 'valid');
    },

    async fullValidation() {
      return validBatches.length === 0 ? null : metricsOf(await trainer.evaluate(validBatches, validReference), 'full_valid');
    },

    ...trainerStateOf(trainer),
  };
}
