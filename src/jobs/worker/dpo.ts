// DPO fine-tuning: preference pairs tokenized with the model's template, reference log-probabilities computed once
// under the model the job starts from, seeded pair batches, DPO (+ RPO's NLL term) steps with reward metrics.
import { preferenceBatches, preferenceSequence, preferenceSteps } from '../../datasets/batches.ts';
import { tokenizePreferenceFile } from '../../datasets/tokenize-file.ts';
import type { TokenizedPreference } from '../../datasets/tokenize-example.ts';
import type { PreferenceBatch } from '../../engine/train/batch.ts';
import { createDpoTrainer } from '../../engine/train/dpo-trainer.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import { preferenceAnswerTarget } from './answer-validation.ts';
import { JobFailure, type MethodRun } from './method.ts';
import { hasTrainedToken, microBatchRowsFor, type MethodSetup } from './method-inputs.ts';
import { assembleMethodRun } from './method-run.ts';

/**
 * A step whose preferred outputs lost more than this many nats per token against the reference (train_preferred_logp_shift)
 * warns that the model is losing its answers: DPO's known failure, where both outputs are pushed down.
 */
export const PREFERRED_LOGP_COLLAPSE = -1;

/** Both outputs keep a trained token within the context (a pair without one carries no preference signal). */
const trainable = (p: TokenizedPreference, contextLength: number) => [p.chosen, p.rejected].every((output) => hasTrainedToken(preferenceSequence(p.promptIds, output), contextLength));

export function prepareDpo(spec: TrainingSpec, log: (line: string) => void): Promise<MethodRun & MethodSetup> {
  const { beta, rpoAlpha = 0 } = spec.hyperparameters;
  if (beta === undefined || !(beta > 0 && beta <= 2)) throw new JobFailure('invalid_hyperparameters', `beta must be a number in (0, 2], got ${beta}`, 'hyperparameters.beta');
  if (!(rpoAlpha >= 0 && Number.isFinite(rpoAlpha))) throw new JobFailure('invalid_hyperparameters', `rpo_alpha must be a number >= 0, got ${rpoAlpha}`, 'hyperparameters.rpo_alpha');
  return assembleMethodRun<TokenizedPreference, PreferenceBatch>(spec, log, {
    words: { items: 'preference pair(s)', requirement: 'has both outputs', truncated: 'sequences' },
    read: tokenizePreferenceFile,
    trainable,
    // Rows are sequences: a pair takes two, so micro-batches hold at most 2·batch_size rows.
    microBatchRows: (pairs, contextLength, batchSize) =>
      Math.max(2, microBatchRowsFor(Math.max(...pairs.map((p) => p.promptIds.length + Math.max(p.chosen.ids.length, p.rejected.ids.length))), contextLength, 2 * batchSize)),
    steps: preferenceSteps,
    validationBatches: (validation, indices, d) => preferenceBatches(validation, d.microBatchRows, d.contextLength, d.padTokenId, indices),
    answerTarget: preferenceAnswerTarget,
    async createTrainer(options, d) {
      // The reference is the model the job starts from: the start adapter (an ft: model) or the fresh one (B = 0, the bare base).
      const trainer = await createDpoTrainer({ ...options, beta, rpoAlpha });
      // Computed before any resumed state is set, from the same batches every time: a resumed job gets exactly these numbers.
      const reference = await trainer.referenceLogps(preferenceBatches(d.training, d.microBatchRows, d.contextLength, d.padTokenId), d.training.length);
      const validReference = await trainer.referenceLogps(preferenceBatches(d.validation, d.microBatchRows, d.contextLength, d.padTokenId), d.validation.length);
      let warned = false;
      return {
        trainer,
        description: `beta ${beta}, rpo_alpha ${rpoAlpha}`,
        async trainStep(microBatches, lr) {
          const r = await trainer.trainStep(microBatches, reference, lr);
          const collapsing = !warned && r.preferredLogpShift < PREFERRED_LOGP_COLLAPSE;
          warned ||= collapsing;
          return {
            metrics: {
              train_loss: r.loss,
              train_mean_token_accuracy: r.accuracy,
              train_reward_accuracy: r.rewardAccuracy,
              train_reward_margin: r.rewardMargin,
              train_preferred_logp_shift: r.preferredLogpShift,
            },
            warning: collapsing
              ? `The preferred outputs are ${(-r.preferredLogpShift).toFixed(2)} nats per token less likely than under the reference model at step ${r.step}: ` +
                'DPO is pushing both outputs down and the tuned model is losing its answers. Lower learning_rate_multiplier or raise rpo_alpha.'
              : undefined,
          };
        },
        evaluate: (batches) => trainer.evaluate(batches, validReference),
      };
    },
  });
}
