// Answer scores of generation-based validation: exact match after whitespace normalisation, and chrF by hand-computed values.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chrF, exactMatch } from '../../../src/jobs/worker/answer-metrics.ts';
import { chatAnswerTarget, preferenceAnswerTarget } from '../../../src/jobs/worker/answer-validation.ts';

test('exact match ignores runs of whitespace and the ends, nothing else', () => {
  assert.ok(exactMatch('  Eight\n legs. ', 'Eight legs.'));
  assert.ok(!exactMatch('eight legs.', 'Eight legs.'));
  assert.ok(!exactMatch('Eight legs', 'Eight legs.'));
});

test('chrF: 1 for equal texts, 0 with no shared character, the averaged n-gram F2 in between', () => {
  assert.equal(chrF('Thank you!', 'Thank  you!'), 1); // whitespace is ignored
  assert.equal(chrF('xyz', 'abc'), 0);
  assert.equal(chrF('', 'abc'), 0);
  assert.equal(chrF('', ''), 1);
  // 'ab' vs 'abc': 1-grams P 2/2, R 2/3; 2-grams P 1/1, R 1/2; no 3-grams in 'ab'. P = 1, R = 7/12, F2 = 5PR/(4P + R) = 7/11.
  assert.ok(Math.abs(chrF('ab', 'abc') - 7 / 11) < 1e-12);
  // Recall weighs more than precision (β = 2): missing half the reference costs more than adding as much.
  assert.ok(chrF('abcdef', 'abcdefghijkl') < chrF('abcdefghijklmnopqr', 'abcdefghijkl'));
  // Repeated n-grams count once per occurrence in both texts (clipped counts).
  assert.ok(chrF('aaaa', 'a') < chrF('a', 'a'));
  // Code points, not UTF-16 units: an emoji is one character.
  assert.equal(chrF('😀', '😀'), 1);
});

test("answer targets: a chat example's last trained span after its prompt; a pair's two trained outputs", () => {
  const ids = Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  const t = chatAnswerTarget({ ids, weights: Uint8Array.from([0, 1, 1, 0, 0, 1, 1, 0]) });
  assert.deepEqual([...t.prompt], [1, 2, 3, 4, 5]);
  assert.deepEqual([...t.reference], [6, 7]);
  assert.equal(t.rejected, null);
  const p = preferenceAnswerTarget({
    promptIds: Int32Array.from([1, 2]),
    chosen: { ids: Int32Array.from([3, 4, 9]), weights: Uint8Array.from([1, 1, 0]) },
    rejected: { ids: Int32Array.from([5, 9]), weights: Uint8Array.from([1, 0]) },
  });
  assert.deepEqual([[...p.prompt], [...p.reference], [...p.rejected!]], [[1, 2], [3, 4], [5]]);
});
