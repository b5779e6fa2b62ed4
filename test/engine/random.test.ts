// The seeded PRNG: reproducible, seed-sensitive, and with the moments its distributions promise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRng, fillNormal, fillUniform } from '../../src/engine/random.ts';

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
