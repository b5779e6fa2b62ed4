import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { analyzeTrainingFile, resolveHyperparameters, StatisticsAccumulator } from '../../src/datasets/statistics.ts';
import { createChatTokenizer } from '../../src/datasets/tokenize-example.ts';
import { chatmlTokenizer } from './tokenizer-fixture.ts';

const example = (length: number, trained: number[]) => {
  const weights = new Uint8Array(length);
  for (const t of trained) weights[t] = 1;
  return { ids: new Int32Array(length), weights };
};

test('n_epochs auto follows the cookbook: 3, scaled so examples × epochs lands in [100, 25000], epochs in [1, 25]', () => {
  const epochs = (n: number) => resolveHyperparameters(n).n_epochs;
  assert.equal(epochs(1), 25);
  assert.equal(epochs(3), 25);
  assert.equal(epochs(10), 10);
  assert.equal(epochs(33), 3);
  assert.equal(epochs(34), 3);
  assert.equal(epochs(8333), 3);
  assert.equal(epochs(8334), 2);
  assert.equal(epochs(20000), 1);
  assert.equal(epochs(1_000_000), 1);
});

test('batch size auto is ~0.2% of the examples in [1, 256]; lr multiplier auto is √batch (≤ 4); numbers given are kept', () => {
  assert.deepEqual(resolveHyperparameters(50), { n_epochs: 3, batch_size: 1, learning_rate_multiplier: 1 });
  assert.equal(resolveHyperparameters(5000).batch_size, 10);
  assert.equal(resolveHyperparameters(1_000_000).batch_size, 256);
  assert.equal(resolveHyperparameters(2000).learning_rate_multiplier, 2);
  assert.equal(resolveHyperparameters(1_000_000).learning_rate_multiplier, 4);
  assert.deepEqual(resolveHyperparameters(50, { n_epochs: 7, batch_size: 4, learning_rate_multiplier: 0.3 }), {
    n_epochs: 7, batch_size: 4, learning_rate_multiplier: 0.3,
  });
  assert.equal(resolveHyperparameters(50, { batch_size: 16 }).learning_rate_multiplier, 4);
});

test('statistics: token min/mean/max, truncation warning, trained tokens counted within the context only', () => {
  const acc = new StatisticsAccumulator(8);
  acc.add(example(4, [2, 3]));
  acc.add(example(10, [5, 6, 9])); // 10 > 8: truncated, token 9 is cut off
  acc.add({ promptIds: new Int32Array(3), chosen: example(2, [0, 1]), rejected: example(4, [0]) });
  const s = acc.finish();
  assert.deepEqual(s.tokens, { total: 4 + 10 + 7, min: 4, mean: 7, max: 10 });
  assert.equal(s.examples, 3);
  assert.equal(s.truncatedExamples, 1);
  assert.equal(s.trainedTokensPerEpoch, 2 + 2 + 3);
  assert.match(s.warnings[0]!, /^1 example\(s\) are longer than the 8-token context and will be truncated/);
  assert.deepEqual(new StatisticsAccumulator(8).finish().warnings, []);
});

test('analyzeTrainingFile: streams a file through the chat template and resolves hyperparameters', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'stats-')), 'train.jsonl');
  const line = { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }] };
  writeFileSync(path, `${JSON.stringify(line)}\n`.repeat(12));
  const chat = createChatTokenizer(chatmlTokenizer());
  const r = await analyzeTrainingFile(path, { format: 'chat', chat, contextLength: 1024 });
  // <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n: 1+5+2+1+1 + 1+10+5+1+1 = 28 tokens, 6 trained.
  assert.deepEqual(r.statistics.tokens, { total: 12 * 28, min: 28, mean: 28, max: 28 });
  assert.equal(r.statistics.trainedTokensPerEpoch, 12 * 6);
  assert.deepEqual(r.hyperparameters, { n_epochs: 8, batch_size: 1, learning_rate_multiplier: 1 });
  assert.equal(r.estimatedTrainedTokens, 12 * 6 * 8);
});
