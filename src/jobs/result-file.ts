// The job's result file, `step_metrics.csv`, in the hosted service's columns, built from the stored metrics events.
import type { StepMetrics, TrainingMethod } from './worker-protocol.ts';

/** Hosted columns; `train_accuracy` is the step's train_mean_token_accuracy. Validation cells stay empty on steps without validation. */
export const RESULT_COLUMNS = ['step', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_mean_token_accuracy'] as const;
/** A DPO job's result file adds the reward columns after the hosted ones (how often and by how much the preferred output wins). */
export const DPO_RESULT_COLUMNS = ['train_reward_accuracy', 'train_reward_margin', 'valid_reward_accuracy', 'valid_reward_margin'] as const;

const cell = (v: number | undefined) => (v === undefined || v === null ? '' : String(v));

/** One row per step, in step order. Served as plain CSV (not base64 as the hosted service does): see the README. */
export function stepMetricsCsv(steps: Partial<StepMetrics>[], method: TrainingMethod = 'supervised'): string {
  const dpo = method === 'dpo';
  const rows = [...steps].sort((a, b) => a.step! - b.step!).map((m) =>
    [m.step, m.train_loss, m.train_mean_token_accuracy, m.valid_loss, m.valid_mean_token_accuracy, ...(dpo ? DPO_RESULT_COLUMNS.map((c) => m[c]) : [])].map(cell).join(','));
  return [[...RESULT_COLUMNS, ...(dpo ? DPO_RESULT_COLUMNS : [])].join(','), ...rows].join('\n') + '\n';
}
