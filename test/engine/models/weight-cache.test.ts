// The weight cache: 4096-aligned offsets, exact values per dtype, shard support, reuse, rebuild on change, clear errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readFileSync, readSync, closeSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WEIGHT_ALIGNMENT, ensureWeightCache, quantizeParameter } from '../../../src/engine/models/weight-cache.ts';
import { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16, writeSafetensors } from '../../../src/engine/models/safetensors.ts';
import { writeTinyModel } from './tiny-model.ts';
import { TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';
import { baseParameters } from '../../../src/engine/models/parameters.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'lt-wc-'));

function readAt(path: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = openSync(path, 'r');
  readSync(fd, buf, 0, length, offset);
  closeSync(fd);
  return buf;
}

test('bf16 sharded model -> float32 cache: aligned offsets, exact values, every parameter', () => {
  const root = tmp();
  const model = join(root, 'model');
  const weights = writeTinyModel(model, { dtype: 'BF16', shards: true });
  const before = readdirSync(model).map((f) => [f, statSync(join(model, f)).mtimeMs]);
  const cache = ensureWeightCache(model, join(root, 'cache'), { dtype: 'float32' });
  assert.deepEqual(Object.keys(cache.manifest.tensors).sort(), [...weights.keys()].sort());
  for (const [name, e] of Object.entries(cache.manifest.tensors)) {
    assert.equal(e.offset % WEIGHT_ALIGNMENT, 0, name);
    const got = new Float32Array(readAt(cache.dataPath, e.offset, e.length).buffer.slice(0));
    assert.deepEqual(got, bfloat16ToFloat32(float32ToBfloat16(weights.get(name)!.data)), name);
    assert.deepEqual(e.dims, weights.get(name)!.dims);
  }
  assert.equal(statSync(cache.dataPath).size, cache.manifest.totalBytes);
  assert.deepEqual(readdirSync(model).map((f) => [f, statSync(join(model, f)).mtimeMs]), before, 'user files untouched');
});

test('float16 cache holds half-precision values', () => {
  const root = tmp();
  const model = join(root, 'model');
  const weights = writeTinyModel(model);
  const cache = ensureWeightCache(model, join(root, 'cache'), { dtype: 'float16' });
  const e = cache.manifest.tensors['model.layers.1.mlp.up_proj.weight'];
  assert.equal(e.length, 12 * 8 * 2);
  const half = new Uint16Array(readAt(cache.dataPath, e.offset, e.length).buffer.slice(0));
  assert.deepEqual(float16ToFloat32(half), float16ToFloat32(float32ToFloat16(weights.get('model.layers.1.mlp.up_proj.weight')!.data)));
});

test('reused while the model is unchanged, rebuilt when a file changes, stale data removed', () => {
  const root = tmp();
  const model = join(root, 'model');
  const cacheDir = join(root, 'cache');
  writeTinyModel(model, { seed: 1 });
  const first = ensureWeightCache(model, cacheDir, { dtype: 'float32' });
  const again = ensureWeightCache(model, cacheDir, { dtype: 'float32' });
  assert.equal(again.dataPath, first.dataPath);
  assert.equal(statSync(again.dataPath).mtimeMs, statSync(first.dataPath).mtimeMs, 'not rewritten');

  const weights = writeTinyModel(model, { seed: 2 });
  const future = new Date(Date.now() + 10_000);
  utimesSync(join(model, 'model.safetensors'), future, future);
  const rebuilt = ensureWeightCache(model, cacheDir, { dtype: 'float32' });
  assert.notEqual(rebuilt.manifest.fingerprint, first.manifest.fingerprint);
  const e = rebuilt.manifest.tensors['model.norm.weight'];
  assert.deepEqual(new Float32Array(readAt(rebuilt.dataPath, e.offset, e.length).buffer.slice(0)), weights.get('model.norm.weight')!.data);
  assert.deepEqual(readdirSync(cacheDir).filter((f) => f.endsWith('.bin')), [rebuilt.manifest.dataFile]);
  assert.ok(!readdirSync(cacheDir).some((f) => f.endsWith('.tmp')));
});

test('a damaged manifest is rebuilt', () => {
  const root = tmp();
  const model = join(root, 'model');
  writeTinyModel(model);
  const cache = ensureWeightCache(model, join(root, 'cache'), { dtype: 'float32' });
  writeFileSync(cache.manifestPath, '{"format":');
  const again = ensureWeightCache(model, join(root, 'cache'), { dtype: 'float32' });
  assert.deepEqual(JSON.parse(readFileSync(again.manifestPath, 'utf8')), cache.manifest);
});

test('a missing or misshapen tensor is named', () => {
  const root = tmp();
  const model = join(root, 'model');
  const weights = writeTinyModel(model);
  weights.delete('model.layers.1.self_attn.k_proj.bias');
  writeSafetensors(join(model, 'model.safetensors'), weights);
  assert.throws(() => ensureWeightCache(model, join(root, 'c1'), { dtype: 'float32' }), /tensor model\.layers\.1\.self_attn\.k_proj\.bias \[4\] is missing/);
  weights.set('model.layers.1.self_attn.k_proj.bias', { dims: [5], data: new Float32Array(5) });
  writeSafetensors(join(model, 'model.safetensors'), weights);
  assert.throws(() => ensureWeightCache(model, join(root, 'c2'), { dtype: 'float32' }), /k_proj\.bias has shape \[5\], config\.json implies \[4\]/);
});

test('quantized caches: each matrix (projections, embedding, untied head) as codes + block scales (aligned, as quantize() gives them), norms fp32, beside the fp32 cache', () => {
  const root = tmp();
  const model = join(root, 'model');
  const config = writeTinyModelDir(model, { ...TINY_CONFIG_JSON, hidden_size: 64, intermediate_size: 128, vocab_size: 19 }, 3);
  const cacheDir = join(root, 'cache');
  const fp32 = ensureWeightCache(model, cacheDir, { dtype: 'float32' });
  const source = (name: string) => fp32.manifest.tensors[name];
  const matrices = baseParameters(config).filter((p) => p.dims.length === 2).map((p) => p.name);
  assert.equal(matrices.length, 14 + 2);
  for (const precision of ['nf4', 'int4', 'int8'] as const) {
    const cache = ensureWeightCache(model, cacheDir, { dtype: 'float32', precision });
    assert.equal(cache.manifest.precision, precision);
    assert.deepEqual(Object.keys(cache.manifest.quantized).sort(), [...matrices].sort());
    assert.deepEqual(Object.keys(cache.manifest.tensors).sort(), baseParameters(config).map((p) => p.name).filter((n) => !matrices.includes(n)).sort());
    for (const [name, e] of Object.entries(cache.manifest.quantized)) {
      assert.equal(e.codes.offset % WEIGHT_ALIGNMENT, 0, name);
      assert.equal(e.scales.offset % WEIGHT_ALIGNMENT, 0, name);
      const s = source(name);
      const q = quantizeParameter({ name, dims: s.dims }, new Float32Array(readAt(fp32.dataPath, s.offset, s.length).buffer.slice(0)), precision);
      const vocabulary = name === 'model.embed_tokens.weight' || name === 'lm_head.weight';
      assert.equal(e.blockSize, precision === 'nf4' && !vocabulary ? 64 : 32, `${precision} ${name}: nf4 projections in blocks of 64, everything else 32`);
      assert.deepEqual(new Uint8Array(readAt(cache.dataPath, e.codes.offset, e.codes.length)), q.codes, `${precision} ${name} codes`);
      assert.deepEqual(new Float32Array(readAt(cache.dataPath, e.scales.offset, e.scales.length).buffer.slice(0)), q.scales, `${precision} ${name} scales`);
    }
  }
  // Every precision's cache stays valid beside the others (each removes only its own stale data files).
  assert.equal(ensureWeightCache(model, cacheDir, { dtype: 'float32' }).dataPath, fp32.dataPath);
  assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith('.bin')).length, 4);
  // The quantized layout is part of a quantized cache's fingerprint (so of its graphs' keys): caches of the previous layout
  // (embedding and head fp32), fingerprinted as the fp32 cache is, are rebuilt rather than read.
  const nf4 = ensureWeightCache(model, cacheDir, { dtype: 'float32', precision: 'nf4' });
  assert.notEqual(nf4.manifest.fingerprint, fp32.manifest.fingerprint);
  // Matrices the blocks do not tile (input width 8 or 12 here) stay fp32.
  const narrow = join(root, 'narrow');
  writeTinyModel(narrow);
  assert.deepEqual(ensureWeightCache(narrow, join(root, 'narrow-cache'), { dtype: 'float32', precision: 'nf4' }).manifest.quantized, {});
});
