// `localtune engine logits|step` on a tiny model: file formats, gradients by PEFT name, an adapter after K steps.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { initAdapter } from '../../../src/engine/lora/init.ts';
import { loadAdapter, saveAdapter } from '../../../src/engine/lora/peft.ts';
import { readSafetensorsHeader } from '../../../src/engine/models/safetensors.ts';
import { requestedDevice } from '../../../src/engine/onnx/session.ts';
import { runEngineCommand } from '../../../src/engine/train/verify-command.ts';
import { TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'localtune-verify-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('engine logits and engine step write their documented files', async () => {
  const model = join(root, 'model');
  const config = writeTinyModelDir(model, TINY_CONFIG_JSON, 4);
  const lora = { r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj' as const, 'o_proj' as const] };
  saveAdapter(join(root, 'adapter'), lora, initAdapter(config, lora, 3), 'tiny');
  const ids = [
    [1, 2, 3, 4, 5],
    [6, 7, 8],
  ];
  writeFileSync(join(root, 'tokens.json'), JSON.stringify({ input_ids: ids }));
  writeFileSync(join(root, 'batch.json'), JSON.stringify({ input_ids: ids, loss_weights: [[0, 0, 1, 1, 0], [1, 1, 0]] }));
  process.env.LOCALTUNE_DEVICE = 'cpu';
  const common = ['--model', model, '--adapter', join(root, 'adapter'), '--cache', join(root, 'cache')];
  assert.equal(await runEngineCommand(['logits', ...common, '--tokens', join(root, 'tokens.json'), '--out', join(root, 'logits.json')]), 0);
  const out = JSON.parse(readFileSync(join(root, 'logits.json'), 'utf8'));
  assert.equal(out.vocab_size, config.vocabSize);
  assert.deepEqual(
    out.logits.map((r: number[][]) => [r.length, r[0].length]),
    [
      [5, 11],
      [3, 11],
    ],
  );
  assert.equal(await runEngineCommand(['step', ...common, '--batch', join(root, 'batch.json'), '--out', join(root, 'step'), '--steps', '2', '--lr', '0.01']), 0);
  const loss = JSON.parse(readFileSync(join(root, 'step', 'loss.json'), 'utf8'));
  assert.equal(loss.tokens, 4);
  const grads = readSafetensorsHeader(join(root, 'step', 'gradients.safetensors')).tensors;
  assert.deepEqual([...grads.keys()].sort(), [...initAdapter(config, lora, 3).keys()].sort());
  assert.ok(existsSync(join(root, 'step', 'steps.json')));
  const trained = loadAdapter(join(root, 'step', 'adapter'), config);
  assert.ok([...trained.tensors.values()].some((t) => t.data.some((x) => x !== 0) && t.dims[1] === 2), 'B moved off zero');
});

test('LOCALTUNE_DEVICE accepts auto, cpu, cuda only', () => {
  assert.equal(requestedDevice({}), 'auto');
  assert.equal(requestedDevice({ LOCALTUNE_DEVICE: 'CPU' }), 'cpu');
  assert.throws(() => requestedDevice({ LOCALTUNE_DEVICE: 'tpu' }), /auto, cpu or cuda/);
});
