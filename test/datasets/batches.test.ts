import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildMicroBatch, nextPosition, preferenceBatches, preferenceSteps, stepsPerEpoch, trainSteps, type BatchPlan } from '../../src/datasets/batches.ts';
import { epochOrder } from '../../src/datasets/shuffle.ts';
import type { TokenizedExample, TokenizedPreference } from '../../src/datasets/tokenize-example.ts';

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

/** Pair k: prompt 1000k+1 … (3 + k % 4 tokens), preferred output [k, 2k+1, 7], non-preferred output of 2 + k % 5 tokens. */
function pair(k: number): TokenizedPreference {
  const promptIds = Int32Array.from({ length: 3 + (k % 4) }, (_, t) => 1000 * k + t + 1);
  const output = (ids: number[]) => ({ ids: Int32Array.from(ids), weights: new Uint8Array(ids.length).fill(1) });
  return { promptIds, chosen: output([k, 2 * k + 1, 7]), rejected: output(Array.from({ length: 2 + (k % 5) }, (_, t) => 500 + t)) };
}

const preferencePlan: BatchPlan<TokenizedPreference> = { examples: Array.from({ length: 11 }, (_, k) => pair(k)), batchSize: 4, microBatchRows: 4, contextLength: 64, seed: 3, epochs: 2 };

test('preference steps: both sequences of a pair in the same micro-batch (rows 2i, 2i+1), the prompt unweighted', () => {
  const all = [...preferenceSteps(preferencePlan)];
  assert.equal(all.length, 2 * stepsPerEpoch(11, 4));
  for (const s of all) {
    assert.deepEqual(s.microBatches.flatMap((b) => b.pairs).sort((x, y) => x - y), [...s.exampleIndices].sort((x, y) => x - y));
    for (const { batch, pairs } of s.microBatches) {
      assert.equal(batch.rows, 2 * pairs.length);
      assert.ok(pairs.length <= 2);
      pairs.forEach((k, i) => {
        const p = preferencePlan.examples[k]!;
        const row = (r: number) => Array.from(batch.inputIds.subarray(r * batch.seqLen, r * batch.seqLen + p.promptIds.length));
        assert.deepEqual(row(2 * i), Array.from(p.promptIds));
        assert.deepEqual(row(2 * i + 1), Array.from(p.promptIds));
        // Preferred row: the last prompt token predicts the first output token; everything the output holds is weighted.
        const weights = (r: number) => Array.from(batch.lossWeights.subarray(r * batch.seqLen, (r + 1) * batch.seqLen));
        assert.deepEqual(weights(2 * i).slice(0, p.promptIds.length + 3), [...new Array(p.promptIds.length - 1).fill(0), 1, 1, 1, 0]);
        assert.equal(batch.labels[2 * i * batch.seqLen + p.promptIds.length - 1], k);
        assert.equal(weights(2 * i + 1).reduce((a, w) => a + w, 0), p.rejected.ids.length);
      });
    }
  }
  for (let e = 0; e < 2; e++) {
    const seen = all.filter((s) => s.epoch === e).flatMap((s) => s.exampleIndices);
    assert.deepEqual(seen.sort((x, y) => x - y), Array.from({ length: 11 }, (_, i) => i));
  }
  // Same shuffling as supervised steps over the same count, seed and batch size.
  const supervised = [...trainSteps({ ...plan, examples: plan.examples.slice(0, 11), batchSize: 4, seed: 3, epochs: 2 })];
  assert.deepEqual(
    all.map((s) => s.exampleIndices),
    supervised.map((s) => s.exampleIndices),
  );
});

test('preference steps resume exactly; preferenceBatches visit every pair once in file order', () => {
  const all = [...preferenceSteps(preferencePlan)];
  assert.deepEqual([...preferenceSteps(preferencePlan, { epoch: 1, step: 1 })], all.slice(stepsPerEpoch(11, 4) + 1));
  const fixed = preferenceBatches(preferencePlan.examples, 4, 64);
  assert.deepEqual(
    fixed.flatMap((b) => b.pairs),
    Array.from({ length: 11 }, (_, i) => i),
  );
  assert.deepEqual(
    fixed.map((b) => b.batch.rows),
    [4, 4, 4, 4, 4, 2],
  );
  assert.deepEqual(preferenceBatches(preferencePlan.examples, 1, 64)[0]!.pairs, [0]); // one pair even when rows < 2
  assert.deepEqual(
    preferenceBatches(preferencePlan.examples, 4, 64, 0, [9, 2, 5]).map((b) => b.pairs),
    [[9, 2], [5]],
  );
});
