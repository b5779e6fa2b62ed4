// The seeded PRNG: reproducible, seed-sensitive, and with the moments its distributions promise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRng, fillKeepMask, fillNormal, fillUniform } from '../../src/engine/random.ts';

test('same seed, same stream; different seed, different stream', () => {
  const a = createRng(5);
  const b = createRng(5);
  const c = createRng(6);
  const xa = Array.from({ length: 8 }, () => a.uint32());
  assert.deepEqual(xa, Array.from({ length: 8 }, () => b.uint32()));
  assert.notDeepEqual(xa, Array.from({ length: 8 }, () => c.uint32()));
  assert.throws(() => createRng(1.5), /seed must be an integer/);
});

test('uniform and normal have the right moments', () => {
  const rng = createRng(11);
  const u = fillUniform(rng, new Float32Array(100_000), -2, 2);
  assert.ok(u.every((v) => v >= -2 && v < 2));
  const mean = (x: Float32Array) => x.reduce((s, v) => s + v, 0) / x.length;
  assert.ok(Math.abs(mean(u)) < 0.02);
  const n = fillNormal(rng, new Float32Array(100_000), 1, 3);
  const m = mean(n);
  const sd = Math.sqrt(n.reduce((s, v) => s + (v - m) ** 2, 0) / n.length);
  assert.ok(Math.abs(m - 1) < 0.03 && Math.abs(sd - 3) < 0.03, `mean ${m} sd ${sd}`);
});

test('dropout keep-masks: a function of seed and position alone, dropping the asked fraction without pattern', () => {
  const n = 200_000;
  const a = fillKeepMask(new Uint8Array(n), 7, 0.25);
  assert.deepEqual(a, fillKeepMask(new Uint8Array(n), 7, 0.25));
  const b = fillKeepMask(new Uint8Array(n), 8, 0.25);
  const same = a.reduce((s, v, i) => s + (v === b[i] ? 1 : 0), 0);
  assert.ok(Math.abs(same / n - 0.625) < 0.01, `another seed agrees on ${same / n} (independent masks: 0.625)`); // 0.75² + 0.25²
  const kept = a.reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(kept / n - 0.75) < 0.005, `kept ${kept / n}`);
  // Neighbours are independent: P(both kept) ≈ 0.75².
  let pairs = 0;
  for (let i = 1; i < n; i++) pairs += a[i] & a[i - 1];
  assert.ok(Math.abs(pairs / (n - 1) - 0.5625) < 0.01, `adjacent both kept ${pairs / (n - 1)}`);
  assert.ok(fillKeepMask(new Uint8Array(1000), 3, 0).every((v) => v === 1));
});
