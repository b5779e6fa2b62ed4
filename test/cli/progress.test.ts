// The demo's terminal output: the progress bar and plain lines, the ETA, and the side-by-side answer table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EtaEstimator, formatDuration, progressBar, progressLine } from '../../src/cli/progress.ts';
import { printable, sideBySide } from '../../src/cli/side-by-side.ts';

test('the bar fills with the steps done and fits the terminal', () => {
  const bar = progressBar({ step: 30, totalSteps: 60, trainLoss: 1.23456, etaSeconds: 75 }, 80);
  assert.match(bar, /^\[#+-+\] {2}step 30\/60 {2}loss 1\.235 {2}ETA 1:15$/);
  const inside = /^\[([#-]+)\]/.exec(bar)![1]!;
  assert.equal(inside.replace(/-/g, '').length * 2, inside.length, 'half the steps, half the bar');
  assert.ok(bar.length <= 80);
  assert.match(progressBar({ step: 1, totalSteps: 60, trainLoss: 3, etaSeconds: null }, 80), /ETA -:--$/);
  assert.equal(progressLine({ step: 60, totalSteps: 60, trainLoss: 0.0038, etaSeconds: 0 }), 'step 60/60 train_loss=0.0038 eta=0:00');
});

test('the ETA comes from the pace since the first step seen', () => {
  let now = 0;
  const eta = new EtaEstimator(() => now);
  assert.equal(eta.update(1, 101), null);
  now = 10_000; // 10 steps in 10 s
  assert.equal(eta.update(11, 101), 90);
  assert.equal(formatDuration(90), '1:30');
  assert.equal(formatDuration(3599.6), '60:00');
});

test('answers are wrapped into columns and control bytes are shown as dots', () => {
  assert.equal(printable('a\u0007b\nc\ufffd'), 'a·b·c·');
  const table = sideBySide(['question', 'tuned'], [['How long is the warranty?', 'Every Nimbus phone has a 2-year limited warranty.']], 40);
  const lines = table.split('\n');
  assert.equal(lines[0], 'question             tuned');
  assert.match(lines[1]!, /^-+$/);
  assert.ok(lines.every((l) => l.length <= 40), table);
  assert.equal(lines.slice(2).map((l) => l.slice(21).trim()).join(' '), 'Every Nimbus phone has a 2-year limited warranty.');
  assert.equal(lines.slice(2).map((l) => l.slice(0, 18).trim()).filter(Boolean).join(' '), 'How long is the warranty?');
});
