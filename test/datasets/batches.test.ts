import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildMicroBatch, nextPosition, stepsPerEpoch, trainSteps, type BatchPlan } from '../../src/datasets/batches.ts';
import { epochOrder } from '../../src/datasets/shuffle.ts';
import type { TokenizedExample } from '../../src/datasets/tokenize-example.ts';

/** Example k: ids 100k+1 … 100k+len, the last half weighted. */
function example(k: number, len: number): TokenizedExample {
  const ids = Int32Array.from({ length: len }, (_, t) => 100 * k + t + 1);
  const weights = Uint8Array.from({ length: len }, (_, t) => (t >= len / 2 ? 1 : 0));
  return { ids, weights };
}

test('micro-batch: right padding to the bucket, labels are the next token where it is weighted', () => {
  const b = buildMicroBatch([example(1, 4), example(2, 70)], 4096, 9);
  assert.equal(b.rows, 2);
  assert.equal(b.seqLen, 128);
  assert.deepEqual(Array.from(b.inputIds.subarray(0, 6)), [101, 102, 103, 104, 9, 9]);
  assert.deepEqual(Array.from(b.attentionMask.subarray(0, 6)), [1, 1, 1, 1, 0, 0]);
  // tokens 2 and 3 (ids 103, 104) are weighted: predicted from positions 1 and 2.
  assert.deepEqual(Array.from(b.labels.subarray(0, 6)), [0, 103, 104, 0, 0, 0]);
  assert.deepEqual(Array.from(b.lossWeights.subarray(0, 6)), [0, 1, 1, 0, 0, 0]);
  assert.equal(b.lossWeights.subarray(128).reduce((s, w) => s + w, 0), 35); // tokens 35..69, all predictable
  assert.equal(b.inputIds.length, 2 * 128);
});

test('micro-batch: examples over the context length lose their end', () => {
  const b = buildMicroBatch([example(1, 100)], 80, 0);
  assert.equal(b.seqLen, 80);
  assert.equal(b.inputIds[79], 180);
  assert.equal(b.attentionMask.reduce((s, m) => s + m, 0), 80);
  assert.equal(b.lossWeights[78], 1); // position 78 predicts token 79, the last one kept
  assert.equal(b.lossWeights[79], 0);
});

test('shuffle: a permutation, fixed by (seed, epoch), different across epochs and seeds', () => {
  const a = epochOrder(50, 7, 0);
  assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i));
  assert.deepEqual(epochOrder(50, 7, 0), a);
  assert.notDeepEqual(epochOrder(50, 7, 1), a);
  assert.notDeepEqual(epochOrder(50, 8, 0), a);
});

const plan: BatchPlan = {
  examples: Array.from({ length: 23 }, (_, k) => example(k, 3 + ((k * 37) % 90))),
  batchSize: 5,
  microBatchRows: 2,
  contextLength: 128,
  seed: 42,
  epochs: 3,
};

test('steps: every example once per epoch, ceil(n / batch) steps, micro-batches of at most microBatchRows', () => {
  assert.equal(stepsPerEpoch(23, 5), 5);
  const steps = [...trainSteps(plan)];
  assert.equal(steps.length, 15);
  for (let e = 0; e < 3; e++) {
    const seen = steps.filter((s) => s.epoch === e).flatMap((s) => s.exampleIndices);
    assert.deepEqual(seen.sort((x, y) => x - y), Array.from({ length: 23 }, (_, i) => i));
  }
  assert.deepEqual(steps.map((s) => s.globalStep), Array.from({ length: 15 }, (_, i) => i));
  assert.deepEqual(steps[4]!.microBatches.map((b) => b.rows), [2, 1]);
  assert.deepEqual(steps[0]!.microBatches.map((b) => b.rows), [2, 2, 1]);
  const weightSum = steps[0]!.exampleIndices.reduce((s, k) => s + plan.examples[k]!.weights.subarray(1).reduce((a, w) => a + w, 0), 0);
  assert.equal(steps[0]!.trainedTokens, weightSum);
});

test('resuming at any saved position yields exactly the batches of an uninterrupted run', () => {
  const all = [...trainSteps(plan)];
  let at = { epoch: 0, step: 0 };
  for (let k = 0; k < all.length; k++) {
    const resumed = [...trainSteps(plan, at)];
    assert.equal(resumed.length, all.length - k);
    assert.deepEqual(resumed, all.slice(k));
    at = nextPosition(at, plan.examples.length, plan.batchSize);
  }
  assert.deepEqual(at, { epoch: 3, step: 0 });
});
