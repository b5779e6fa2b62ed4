// GGUF writing: the header layout read back byte by byte, 32-byte aligned tensor data, Q8_0 blocks as ggml makes them,
// and the Q/K row permutation llama.cpp's `llama` rotary needs.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { permuteRotaryRows } from '../../../src/engine/export/gguf-export.ts';
import { f32, quantizeQ4_0, quantizeQ8_0, str, u32, writeGguf } from '../../../src/engine/models/gguf.ts';
import { float16ToFloat32 } from '../../../src/engine/models/safetensors.ts';

test('Q8_0: d = max|x| / 127 as f16, quants rounded half away from zero; a zero block stays zero', () => {
  const x = Float32Array.from({ length: 64 }, (_, i) => (i < 32 ? i - 16 : 0)); // block 0: -16..15, block 1: zeros
  const q = quantizeQ8_0(x);
  assert.equal(q.length, 2 * 34);
  const view = new DataView(q.buffer);
  const d = float16ToFloat32(new Uint16Array([view.getUint16(0, true)]))[0];
  assert.ok(Math.abs(d - 16 / 127) < 1e-4, `d ${d}`);
  for (let i = 0; i < 32; i++) assert.equal(view.getInt8(2 + i), Math.sign(i - 16) * Math.round(Math.abs((i - 16) * (127 / 16))), `q[${i}]`);
  assert.deepEqual([...q.subarray(34)], new Array(34).fill(0));
  assert.throws(() => quantizeQ8_0(new Float32Array(33)), /multiple of 32/);
});

test('Q4_0: d = (value of largest magnitude) / -8 as f16, nibbles min(15, floor(x / d + 8.5)), value j low and j + 16 high', () => {
  const x = Float32Array.from({ length: 32 }, (_, i) => i - 16); // largest magnitude -16 → d = 2
  const q = quantizeQ4_0(x);
  assert.equal(q.length, 18);
  assert.equal(float16ToFloat32(new Uint16Array([new DataView(q.buffer).getUint16(0, true)]))[0], 2);
  const nibble = (i: number) => Math.min(15, Math.floor((i - 16) / 2 + 8.5));
  for (let j = 0; j < 16; j++) assert.equal(q[2 + j], nibble(j) | (nibble(j + 16) << 4), `byte ${j}`);
});

test('the header holds magic, version 3, counts, typed key/values and tensor infos (dims innermost first); data is 32-byte aligned', () => {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-gguf-'));
  try {
    const file = join(dir, 'x.gguf');
    const a = Float32Array.from({ length: 6 }, (_, i) => i);
    writeGguf(file, new Map([['general.architecture', str('llama')], ['llama.block_count', u32(2)], ['x.eps', f32(0.5)]]), [
      { name: 'a', dims: [2, 3], type: 'F32', data: () => a },
      { name: 'b', dims: [3], type: 'F32', data: () => new Float32Array([7, 8, 9]) },
    ]);
    const buf = readFileSync(file);
    let at = 0;
    const u32le = () => ((at += 4), buf.readUInt32LE(at - 4));
    const u64le = () => ((at += 8), Number(buf.readBigUInt64LE(at - 8)));
    const string = () => {
      const n = u64le();
      at += n;
      return buf.subarray(at - n, at).toString('utf8');
    };
    assert.equal(buf.subarray(0, 4).toString(), 'GGUF');
    at = 4;
    assert.equal(u32le(), 3);
    assert.equal(u64le(), 2); // tensors
    assert.equal(u64le(), 4); // kvs, general.alignment added
    const kvs: Record<string, unknown> = {};
    for (let i = 0; i < 4; i++) {
      const key = string();
      const type = u32le();
      kvs[key] = type === 8 ? string() : type === 4 ? u32le() : type === 6 ? ((at += 4), buf.readFloatLE(at - 4)) : `type ${type}`;
    }
    assert.deepEqual(kvs, { 'general.architecture': 'llama', 'llama.block_count': 2, 'x.eps': 0.5, 'general.alignment': 32 });
    const infos = [0, 1].map(() => ({ name: string(), dims: Array.from({ length: u32le() }, u64le), type: u32le(), offset: u64le() }));
    assert.deepEqual(infos, [
      { name: 'a', dims: [3, 2], type: 0, offset: 0 },
      { name: 'b', dims: [3], type: 0, offset: 32 },
    ]);
    const data = Math.ceil(at / 32) * 32;
    assert.deepEqual([...new Float32Array(buf.buffer.slice(buf.byteOffset + data, buf.byteOffset + data + 24))], [...a]);
    assert.deepEqual([...new Float32Array(buf.buffer.slice(buf.byteOffset + data + 32, buf.byteOffset + data + 44))], [7, 8, 9]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Q/K permutation: per head, rows [first half | second half] become interleaved pairs', () => {
  // 2 heads of head dim 4, one column: head rows (0 1 | 2 3) → (0 2 1 3).
  const t = permuteRotaryRows({ dims: [8, 1], data: Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]) }, 2);
  assert.deepEqual([...t.data], [0, 2, 1, 3, 10, 12, 11, 13]);
  const bias = permuteRotaryRows({ dims: [4], data: Float32Array.from([0, 1, 2, 3]) }, 1);
  assert.deepEqual([...bias.data], [0, 2, 1, 3]);
});
