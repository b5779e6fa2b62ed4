// listBaseModels: usable folders become models named by their folder; the others are listed with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listBaseModels } from '../../../src/engine/models/registry.ts';
import { writeTinyModel, tinyConfigJson } from './tiny-model.ts';

test('models, skipped folders with reasons, hidden folders ignored', () => {
  const root = mkdtempSync(join(tmpdir(), 'lt-reg-'));
  writeTinyModel(join(root, 'tiny-qwen'));
  writeTinyModel(join(root, 'no-tokenizer'));
  rmSync(join(root, 'no-tokenizer', 'tokenizer.json'));
  writeTinyModel(join(root, 'gpt2'));
  writeFileSync(join(root, 'gpt2', 'config.json'), JSON.stringify({ ...tinyConfigJson, architectures: ['GPT2LMHeadModel'] }));
  mkdirSync(join(root, 'empty'));
  writeTinyModel(join(root, 'bad:name'));
  mkdirSync(join(root, '.localtune-default.123.tmp'));
  writeFileSync(join(root, 'notes.txt'), 'not a model');

  const { models, skipped } = listBaseModels(root);
  assert.deepEqual(models.map((m) => [m.id, m.contextLength, m.config.architecture]), [['tiny-qwen', 64, 'Qwen2ForCausalLM']]);
  assert.deepEqual(skipped.map((s) => s.id), ['bad:name', 'empty', 'gpt2', 'no-tokenizer']);
  const reason = Object.fromEntries(skipped.map((s) => [s.id, s.reason]));
  assert.match(reason['bad:name'], /directory name must match/);
  assert.match(reason.empty, /config\.json is missing/);
  assert.match(reason.gpt2, /GPT2LMHeadModel.*not supported/);
  assert.match(reason['no-tokenizer'], /tokenizer\.json is missing/);
  assert.deepEqual(listBaseModels(join(root, 'absent')), { models: [], skipped: [] });
});
