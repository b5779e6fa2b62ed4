// The base-precision policy: explicit precisions kept, `auto` from the starting model, else by the estimated fp32 peak against memory; serving's `auto`.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { baseWeightBytes, trainingPeakEstimate } from '../../src/engine/models/memory-estimate.ts';
import { servingPrecision } from '../../src/engine/serve/model-pool.ts';
import { resolveBasePrecision } from '../../src/jobs/base-precision.ts';
import { TINY_CONFIG_JSON, writeTinyModelDir } from '../engine/fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'localtune-precision-'));
after(() => rmSync(root, { recursive: true, force: true }));
const GB = 2 ** 30;

test('base_precision: explicit kept; auto = the starting model\'s, else fp32 when an fp32 job fits in half the memory, else nf4', () => {
  const dir = join(root, 'model');
  const config = writeTinyModelDir(dir, { ...TINY_CONFIG_JSON, hidden_size: 64, intermediate_size: 128 }, 1);
  const peak = trainingPeakEstimate(config, 'fp32');
  assert.equal(resolveBasePrecision('int4', dir, 'nf4', 64 * GB), 'int4');
  assert.equal(resolveBasePrecision('auto', dir, 'int8', 64 * GB), 'int8');
  assert.equal(resolveBasePrecision(undefined, dir, null, 2 * peak), 'fp32');
  assert.equal(resolveBasePrecision('auto', dir, null, 2 * peak - 1), 'nf4');
  // Serving's auto: twice the fp32 weights (the packed copy) within half the memory.
  const weights = baseWeightBytes(config, 'fp32').total;
  assert.equal(servingPrecision(config, 'auto', 4 * weights), 'fp32');
  assert.equal(servingPrecision(config, 'auto', 4 * weights - 1), 'int4');
  assert.equal(servingPrecision(config, 'int4', 1), 'int4');
});

test('base-weight bytes: 4 a value in fp32; nf4 projections 4 bits + an fp32 absmax per 64 (embedding and head per 32), int4 per 32, int8 8 bits + a scale per 32', () => {
  const config = writeTinyModelDir(join(root, 'bytes'), { ...TINY_CONFIG_JSON, hidden_size: 64, intermediate_size: 128 }, 1);
  const fp32 = baseWeightBytes(config, 'fp32');
  assert.equal(fp32.quantized, 0);
  const nf4 = baseWeightBytes(config, 'nf4');
  const matrixValues = (fp32.total - nf4.fp32) / 4;
  const vocabularyValues = 2 * config.vocabSize * config.hiddenSize; // the embedding and the untied head
  assert.equal(nf4.quantized, (matrixValues - vocabularyValues) * (0.5 + 4 / 64) + vocabularyValues * (0.5 + 4 / 32));
  assert.equal(baseWeightBytes(config, 'int4').quantized, matrixValues * (0.5 + 4 / 32));
  assert.equal(baseWeightBytes(config, 'int8').quantized, matrixValues * (1 + 4 / 32));
});
