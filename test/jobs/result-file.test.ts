// The result file: the hosted step_metrics.csv columns, then localtune's (DPO rewards, generation-based validation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stepMetricsCsv } from '../../src/jobs/result-file.ts';

test('step_metrics.csv has the hosted columns and the answer columns, one row per step, empty validation cells where none ran', () => {
  const csv = stepMetricsCsv([
    { step: 2, train_loss: 0.5, train_mean_token_accuracy: 1, valid_loss: 0.25, valid_mean_token_accuracy: 0.75, valid_exact_match: 0.5, valid_answer_similarity: 0.8, valid_samples: [{ prompt: 'q', reference: 'a', answer: 'b' }] },
    { step: 1, train_loss: 1.5, train_mean_token_accuracy: 0 },
  ]);
  assert.equal(csv, 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,valid_exact_match,valid_answer_similarity\n1,1.5,0,,,,\n2,0.5,1,0.25,0.75,0.5,0.8\n');
});

test("a DPO job's step_metrics.csv adds the reward columns and the share of answers closer to the preferred output", () => {
  const csv = stepMetricsCsv(
    [
      { step: 1, train_loss: 0.69, train_mean_token_accuracy: 0.5, train_reward_accuracy: 0, train_reward_margin: 0 },
      {
        step: 2, train_loss: 0.4, train_mean_token_accuracy: 0.6, train_reward_accuracy: 1, train_reward_margin: 0.8, valid_loss: 0.5, valid_mean_token_accuracy: 0.5,
        valid_reward_accuracy: 0.75, valid_reward_margin: 0.3, train_preferred_logp_shift: -0.25, valid_exact_match: 0, valid_answer_similarity: 0.4, valid_closer_to_preferred: 1,
      },
    ],
    'dpo',
  );
  assert.equal(
    csv,
    'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,train_reward_accuracy,train_reward_margin,valid_reward_accuracy,valid_reward_margin,' +
      'train_preferred_logp_shift,valid_exact_match,valid_answer_similarity,valid_closer_to_preferred\n' +
      '1,0.69,0.5,,,0,0,,,,,,\n2,0.4,0.6,0.5,0.5,1,0.8,0.75,0.3,-0.25,0,0.4,1\n',
  );
});
