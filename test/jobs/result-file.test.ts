// The result file: the hosted step_metrics.csv columns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stepMetricsCsv } from '../../src/jobs/result-file.ts';

test('step_metrics.csv has the hosted columns, one row per step, empty validation cells where none ran', () => {
  const csv = stepMetricsCsv([
    { step: 2, train_loss: 0.5, train_mean_token_accuracy: 1, valid_loss: 0.25, valid_mean_token_accuracy: 0.75 },
    { step: 1, train_loss: 1.5, train_mean_token_accuracy: 0 },
  ]);
  assert.equal(csv, 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,1.5,0,,\n2,0.5,1,0.25,0.75\n');
});
