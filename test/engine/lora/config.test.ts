// LoRA config: defaults, canonical target order, and validation errors naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LORA_CONFIG, loraScaling, resolveLoraConfig } from '../../../src/engine/lora/config.ts';
import type { LoraTarget } from '../../../src/engine/models/parameters.ts';

test('defaults: r 16, alpha 32, dropout 0.05, all seven projections', () => {
  const c = resolveLoraConfig();
  assert.deepEqual(c, { r: 16, alpha: 32, dropout: 0.05, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  assert.equal(loraScaling(c), 2);
  assert.deepEqual(resolveLoraConfig({ r: 8, targetModules: ['v_proj', 'q_proj'] }).targetModules, ['q_proj', 'v_proj']);
  assert.equal(DEFAULT_LORA_CONFIG.r, 16);
});

test('invalid values are refused by name', () => {
  assert.throws(() => resolveLoraConfig({ r: 0 }), /LoRA r must be an integer/);
  assert.throws(() => resolveLoraConfig({ r: 2.5 }), /LoRA r/);
  assert.throws(() => resolveLoraConfig({ alpha: -1 }), /LoRA alpha/);
  assert.throws(() => resolveLoraConfig({ dropout: 1 }), /LoRA dropout/);
  assert.throws(() => resolveLoraConfig({ targetModules: [] }), /at least one/);
  assert.throws(() => resolveLoraConfig({ targetModules: ['lm_head' as LoraTarget] }), /"lm_head" is not one of/);
  assert.throws(() => resolveLoraConfig({ targetModules: ['q_proj', 'q_proj'] }), /duplicates/);
});
