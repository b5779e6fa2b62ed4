// `localtune engine logits|step` on a tiny model: file formats, gradients by PEFT name, an adapter after K steps.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { initAdapter } from '../../../src/engine/lora/init.ts';
import { loadAdapter, saveAdapter } from '../../../src/engine/lora/peft.ts';
import { parseModelConfig } from '../../../src/engine/models/config.ts';
import { dequantize } from '../../../src/engine/models/quantize.ts';
import { bfloat16ToFloat32, float32ToBfloat16, readSafetensorsHeader, writeSafetensors } from '../../../src/engine/models/safetensors.ts';
import { isQuantizedParameter, quantizeParameter } from '../../../src/engine/models/weight-cache.ts';
import { requestedDevice } from '../../../src/engine/onnx/session.ts';
import { runEngineCommand } from '../../../src/engine/train/verify-command.ts';
import { randomWeights, TINY_CONFIG_JSON, writeTinyModelDir } from '../fixtures.ts';

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

test('engine logits --base-precision: each quantized cache (bf16 safetensors in, external data) gives the fp32 logits of its dequantized weights', async () => {
  // Projections wide enough for every format's blocks; the model stored in bf16, as most published checkpoints are.
  const json = { ...TINY_CONFIG_JSON, hidden_size: 64, intermediate_size: 128, vocab_size: 19 };
  const config = parseModelConfig(json);
  const model = join(root, 'q-model');
  mkdirSync(model, { recursive: true });
  writeFileSync(join(model, 'config.json'), JSON.stringify(json));
  const weights = new Map([...randomWeights(config, 6, 'float32')].map(([k, v]) => [k, { dims: v.dims, data: bfloat16ToFloat32(float32ToBfloat16(v.data as Float32Array)) }]));
  writeSafetensors(join(model, 'model.safetensors'), new Map([...weights].map(([k, v]) => [k, { ...v, dtype: 'BF16' as const }])));
  writeFileSync(join(root, 'q-tokens.json'), JSON.stringify({ input_ids: [[1, 5, 9, 13, 17, 2]] }));
  process.env.LOCALTUNE_DEVICE = 'cpu';
  const logits = async (dir: string, precision: string) => {
    const out = join(root, `logits-${precision}-${dir.length}.json`);
    assert.equal(await runEngineCommand(['logits', '--model', dir, '--cache', join(dir, 'cache'), '--tokens', join(root, 'q-tokens.json'), '--out', out, '--base-precision', precision]), 0);
    return (JSON.parse(readFileSync(out, 'utf8')).logits[0] as number[][]).flat();
  };
  for (const format of ['nf4', 'int4', 'int8'] as const) {
    const reference = join(root, `dequantized-${format}`);
    mkdirSync(reference, { recursive: true });
    writeFileSync(join(reference, 'config.json'), JSON.stringify(json));
    const dequantized = new Map(
      [...weights].map(([name, w]) => [name, isQuantizedParameter({ name, dims: w.dims }, format) ? { dims: w.dims, data: dequantize(quantizeParameter({ name, dims: w.dims }, w.data, format)) } : w]),
    );
    writeSafetensors(join(reference, 'model.safetensors'), dequantized);
    const [got, want] = [await logits(model, format), await logits(reference, 'fp32')];
    const scale = Math.max(...want.map(Math.abs));
    const worst = Math.max(...got.map((x, i) => Math.abs(x - want[i])));
    assert.ok(worst < 1e-5 * scale, `${format}: logits differ by ${worst} (largest ${scale})`);
  }
  await assert.rejects(runEngineCommand(['logits', '--model', model, '--tokens', join(root, 'q-tokens.json'), '--out', join(root, 'x.json'), '--base-precision', 'fp16']), /--base-precision must be one of fp32, nf4, int4, int8/);
});
