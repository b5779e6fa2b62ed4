// safetensors: round trips through F32/F16/BF16, exact half-precision conversions, header alignment, sharded indexes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16,
  listModelTensors, readSafetensorsHeader, readTensor, writeSafetensors,
} from '../../../src/engine/models/safetensors.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'lt-st-'));

test('f16 conversions: exact values, rounding to nearest even, subnormals, overflow', () => {
  const x = new Float32Array([0, -0, 1, -2, 0.5, 65504, 70000, 2 ** -24, 2 ** -14, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1, Infinity, NaN]);
  const h = float32ToFloat16(x);
  assert.deepEqual([...h.slice(0, 13)], [0x0000, 0x8000, 0x3c00, 0xc000, 0x3800, 0x7bff, 0x7c00, 0x0001, 0x0400, 0x3c00, 0x3c02, 0x2e66, 0x7c00]);
  const back = float16ToFloat32(h);
  assert.deepEqual([...back.slice(0, 11)], [0, -0, 1, -2, 0.5, 65504, Infinity, 2 ** -24, 2 ** -14, 1, 1 + 2 ** -9]);
  assert.equal(back[11], Math.fround(0.0999755859375));
  assert.ok(Number.isNaN(back[13]));
});

test('bf16 conversions: top half of f32, rounding to nearest even', () => {
  const x = new Float32Array([1, -3.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.14159]);
  const b = float32ToBfloat16(x);
  assert.deepEqual([...b], [0x3f80, 0xc060, 0x3f80, 0x3f82, 0x4049]);
  assert.deepEqual([...bfloat16ToFloat32(b)], [1, -3.5, 1, 1 + 2 ** -6, 3.140625]);
});

test('write then read: dtypes, header padded to 8 bytes, each tensor read alone by offset', () => {
  const dir = tmp();
  const file = join(dir, 'm.safetensors');
  const a = new Float32Array([1, 2, 3, 4, 5, 6]);
  const b = new Float32Array([0.5, -1.25, 3]);
  const c = new Float32Array([2, -0.75]);
  writeSafetensors(file, new Map([
    ['a', { dims: [2, 3], data: a }],
    ['b', { dims: [3], data: b, dtype: 'F16' as const }],
    ['c', { dims: [1, 2], data: c, dtype: 'BF16' as const }],
  ]), { format: 'pt' });
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  assert.equal(headerLen % 8, 0);
  const { tensors, metadata } = readSafetensorsHeader(file);
  assert.deepEqual(metadata, { format: 'pt' });
  assert.deepEqual([...tensors.keys()], ['a', 'b', 'c']);
  assert.equal(tensors.get('b')!.dtype, 'F16');
  assert.equal(tensors.get('a')!.begin, 8 + headerLen);
  assert.deepEqual(readTensor(tensors.get('a')!), { dims: [2, 3], data: a });
  assert.deepEqual(readTensor(tensors.get('b')!), { dims: [3], data: b });
  assert.deepEqual(readTensor(tensors.get('c')!), { dims: [1, 2], data: c });
});

test('writing is deterministic regardless of insertion order', () => {
  const dir = tmp();
  const t1 = { dims: [2], data: new Float32Array([1, 2]) };
  const t2 = { dims: [1], data: new Float32Array([3]), dtype: 'F16' as const };
  writeSafetensors(join(dir, 'x.safetensors'), new Map([['z', t1], ['y', t2]]));
  writeSafetensors(join(dir, 'y.safetensors'), new Map([['y', t2], ['z', t1]]));
  assert.deepEqual(readFileSync(join(dir, 'x.safetensors')), readFileSync(join(dir, 'y.safetensors')));
});

test('sharded model directory through model.safetensors.index.json', () => {
  const dir = tmp();
  writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), new Map([['w1', { dims: [2], data: new Float32Array([1, 2]) }]]));
  writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), new Map([['w2', { dims: [1], data: new Float32Array([7]), dtype: 'BF16' as const }]]));
  const index = { metadata: { total_size: 10 }, weight_map: { w1: 'model-00001-of-00002.safetensors', w2: 'model-00002-of-00002.safetensors' } };
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  const all = listModelTensors(dir);
  assert.deepEqual([...all.keys()].sort(), ['w1', 'w2']);
  assert.deepEqual([...readTensor(all.get('w2')!).data], [7]);

  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...index.weight_map, w3: 'model-00003-of-00003.safetensors' } }));
  assert.throws(() => listModelTensors(dir), /shard model-00003-of-00003.safetensors named by the index is missing/);
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w1: 'model-00002-of-00002.safetensors', w2: 'model-00002-of-00002.safetensors' } }));
  assert.throws(() => listModelTensors(dir), /tensor w1 is not in model-00002-of-00002.safetensors/);
});

test('corrupt files are refused with the file named', () => {
  const dir = tmp();
  const file = join(dir, 'bad.safetensors');
  const header = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 8] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(file, Buffer.concat([len, header, Buffer.alloc(8)]));
  assert.throws(() => readSafetensorsHeader(file), /tensor w has 8 bytes, its F32 shape \[4\] needs 16/);
  writeFileSync(file, Buffer.from([255, 255, 255, 255, 0, 0, 0, 0]));
  assert.throws(() => readSafetensorsHeader(file), /bad safetensors header length/);
});
