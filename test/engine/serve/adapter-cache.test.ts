// The adapter cache's state after every load and eviction: LRU order, bytes, budget.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createAdapterCache, type PreparedAdapter } from '../../../src/engine/serve/adapter-cache.ts';
import { tinyConfig } from '../fixtures.ts';

const config = tinyConfig();
const loads: string[] = [];
const fake = (key: string, dir: string): PreparedAdapter => {
  loads.push(key);
  return { key, rank: 1, targets: new Set(), a: new Map(), b: new Map(), bytes: Number(dir) };
};

test('loads on first use, hits move to most recent, the least recently used goes first past the budget, evict removes', () => {
  const cache = createAdapterCache(100, fake);
  cache.get('a', '40', config);
  assert.deepEqual(cache.stats(), { keys: ['a'], bytes: 40, budgetBytes: 100 });
  cache.get('b', '40', config);
  assert.deepEqual(cache.stats().keys, ['a', 'b']);
  assert.equal(cache.get('a', '40', config).key, 'a'); // hit: no load, now most recent
  assert.deepEqual(loads, ['a', 'b']);
  assert.deepEqual(cache.stats().keys, ['b', 'a']);
  cache.get('c', '30', config); // 110 > 100: b goes
  assert.deepEqual(cache.stats(), { keys: ['a', 'c'], bytes: 70, budgetBytes: 100 });
  assert.equal(cache.evict('a'), true);
  assert.equal(cache.evict('a'), false);
  assert.deepEqual(cache.stats(), { keys: ['c'], bytes: 30, budgetBytes: 100 });
  cache.get('huge', '500', config); // larger than the budget: served, everything else evicted
  assert.deepEqual(cache.stats(), { keys: ['huge'], bytes: 500, budgetBytes: 100 });
  cache.get('b', '40', config);
  assert.deepEqual(cache.stats(), { keys: ['b'], bytes: 40, budgetBytes: 100 });
  assert.deepEqual(loads, ['a', 'b', 'c', 'huge', 'b']);
});
