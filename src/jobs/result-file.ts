// The job's result file, `step_metrics.csv`, in the hosted service's columns plus localtune's, built from the stored metrics events.
import type { StepMetrics, TrainingMethod } from './worker-protocol.ts';

/** Hosted columns; `train_accuracy` is the step's train_mean_token_accuracy. Validation cells stay empty on steps without validation. */
export const RESULT_COLUMNS = ['step', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_mean_token_accuracy'] as const;
/** A DPO job's result file adds the reward columns after the hosted ones (how often and by how much the preferred output wins). */
export const DPO_RESULT_COLUMNS = ['train_reward_accuracy', 'train_reward_margin', 'valid_reward_accuracy', 'valid_reward_margin', 'train_preferred_logp_shift'] as const;
/** Then the generation-based validation of epoch ends (empty elsewhere, and without a validation file). */
export const ANSWER_RESULT_COLUMNS = ['valid_exact_match', 'valid_answer_similarity'] as const;
export const DPO_ANSWER_RESULT_COLUMNS = ['valid_closer_to_preferred'] as const;

const cell = (v: number | undefined) => (v === undefined || v === null ? '' : String(v));

/** One row per step, in step order. Served as plain CSV (not base64 as the hosted service does): see the README. */
export function stepMetricsCsv(steps: Partial<StepMetrics>[], method: TrainingMethod = 'supervised'): string {
  const dpo = method === 'dpo';
  const extra = [...(dpo ? DPO_RESULT_COLUMNS : []), ...ANSWER_RESULT_COLUMNS, ...(dpo ? DPO_ANSWER_RESULT_COLUMNS : [])];
  const rows = [...steps].sort((a, b) => a.step! - b.step!).map((m) =>
    [m.step, m.train_loss, m.train_mean_token_accuracy, m.valid_loss, m.valid_mean_token_accuracy, ...extra.map((c) => m[c])].map(cell).join(','));
  return [[...RESULT_COLUMNS, ...extra].join(','), ...rows].join('\n') + '\n';
}
