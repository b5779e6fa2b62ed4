// safetensors files: header parsing, reading one tensor at a time by offset (F32/F16/BF16 -> Float32Array), sharded indexes, atomic deterministic writing.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?},
// then the data block; offsets are relative to the data block. Assumes a little-endian host (x86, arm64).
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { writeAll, writeFileAtomically } from '../atomic-file.ts';

export type TensorDtype = 'F32' | 'F16' | 'BF16';
const DTYPE_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Where one tensor lives: `begin`/`end` are absolute byte offsets in `file`. */
export interface TensorEntry {
  name: string;
  dtype: string; // as written in the header; readTensor converts F32/F16/BF16
  dims: number[];
  file: string;
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** A tensor held in memory, row-major. */
export interface Tensor {
  dims: number[];
  data: Float32Array;
}

function readExactly(fd: number, bytes: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < bytes.length) {
    const n = readSync(fd, bytes, done, bytes.length - done, position + done);
    if (n === 0) throw new Error(`${what}: file ends before byte ${position + bytes.length}`);
    done += n;
  }
}

/** Reads and checks a safetensors header without touching the tensor data. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const size = statSync(file).size;
  const fd = openSync(file, 'r');
  try {
    const len = new Uint8Array(8);
    readExactly(fd, len, 0, file);
    const headerLen = Number(new DataView(len.buffer).getBigUint64(0, true));
    if (headerLen > size - 8 || headerLen > 100_000_000) throw new Error(`${file}: bad safetensors header length ${headerLen}`);
    const json = new Uint8Array(headerLen);
    readExactly(fd, json, 8, file);
    const header = JSON.parse(Buffer.from(json).toString('utf8')) as Record<string, unknown>;
    const dataStart = 8 + headerLen;
    const tensors = new Map<string, TensorEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(header)) {
      if (name === '__metadata__') {
        metadata = (value ?? {}) as Record<string, string>;
        continue;
      }
      const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const dims = v.shape as number[];
      const offsets = v.data_offsets as number[];
      if (typeof v.dtype !== 'string' || !Array.isArray(dims) || !Array.isArray(offsets) || offsets.length !== 2) {
        throw new Error(`${file}: malformed header entry for tensor ${name}`);
      }
      const bytes = (DTYPE_BYTES[v.dtype] ?? 0) * dims.reduce((a, b) => a * b, 1);
      const [b, e] = offsets as [number, number];
      if (DTYPE_BYTES[v.dtype] !== undefined && e - b !== bytes) throw new Error(`${file}: tensor ${name} has ${e - b} bytes, its ${v.dtype} shape [${dims}] needs ${bytes}`);
      if (dataStart + e > size || b > e) throw new Error(`${file}: tensor ${name} lies outside the file`);
      tensors.set(name, { name, dtype: v.dtype, dims, file, begin: dataStart + b, end: dataStart + e });
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** bf16 is the top half of an f32. */
export function bfloat16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return new Float32Array(out.buffer);
}

/** IEEE half -> single, including subnormals, infinities and NaN. */
export function float16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** single -> half, round to nearest even, overflow to infinity. */
export function float32ToFloat16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      // Subnormal half (or zero): shift the implicit-1 mantissa right, rounding to nearest even.
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      const rest = mant & ((1 << shift) - 1);
      let m = mant >>> shift;
      if (rest > half || (rest === half && m & 1)) m++;
      out[i] = sign | m;
      continue;
    }
    const rest = mant & 0x1fff;
    let m = mant >>> 13;
    if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
      m++;
      if (m === 0x400) {
        m = 0;
        e++;
        if (e >= 31) {
          out[i] = sign | 0x7c00;
          continue;
        }
      }
    }
    out[i] = sign | (e << 10) | m;
  }
  return out;
}

/** single -> bfloat16, round to nearest even (NaN stays NaN). */
export function float32ToBfloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** Reads one tensor's bytes from its file (only that range) and converts it to float32. */
export function readTensor(entry: TensorEntry): Tensor {
  const count = entry.dims.reduce((a, b) => a * b, 1);
  const fd = openSync(entry.file, 'r');
  try {
    if (entry.dtype === 'F32') {
      const data = new Float32Array(count);
      readExactly(fd, new Uint8Array(data.buffer), entry.begin, entry.file);
      return { dims: entry.dims, data };
    }
    if (entry.dtype === 'F16' || entry.dtype === 'BF16') {
      const half = new Uint16Array(count);
      readExactly(fd, new Uint8Array(half.buffer), entry.begin, entry.file);
      return { dims: entry.dims, data: entry.dtype === 'F16' ? float16ToFloat32(half) : bfloat16ToFloat32(half) };
    }
  } finally {
    closeSync(fd);
  }
  throw new Error(`${entry.file}: tensor ${entry.name} has dtype ${entry.dtype}; only F32, F16 and BF16 are supported`);
}

/**
 * Every tensor of a model directory: from `model.safetensors.index.json` (sharded) when present,
 * else from every `*.safetensors` file in it. Throws when a tensor appears twice or a shard is missing.
 */
export function listModelTensors(modelDir: string): Map<string, TensorEntry> {
  const indexPath = join(modelDir, 'model.safetensors.index.json');
  let files: string[];
  let expected: Record<string, string> | null = null;
  if (existsSync(indexPath)) {
    const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
    if (!index.weight_map || typeof index.weight_map !== 'object') throw new Error(`${indexPath}: weight_map is missing`);
    expected = index.weight_map;
    files = [...new Set(Object.values(expected))].sort();
  } else {
    files = readdirSync(modelDir).filter((f) => f.endsWith('.safetensors')).sort();
    if (files.length === 0) throw new Error(`${modelDir}: no *.safetensors files`);
  }
  const all = new Map<string, TensorEntry>();
  for (const f of files) {
    const path = join(modelDir, f);
    if (basename(f) !== f) throw new Error(`${indexPath}: shard name ${JSON.stringify(f)} must be a file in the model directory`);
    if (!existsSync(path)) throw new Error(`${modelDir}: shard ${f} named by the index is missing`);
    for (const [name, entry] of readSafetensorsHeader(path).tensors) {
      if (all.has(name)) throw new Error(`${modelDir}: tensor ${name} appears in both ${basename(all.get(name)!.file)} and ${f}`);
      all.set(name, entry);
    }
  }
  if (expected) {
    for (const [name, f] of Object.entries(expected)) {
      const entry = all.get(name);
      if (!entry || basename(entry.file) !== f) throw new Error(`${indexPath}: tensor ${name} is not in ${f}`);
    }
  }
  return all;
}

export interface TensorToWrite extends Tensor {
  dtype?: TensorDtype; // written as F32 unless given
}

/** A tensor whose values are produced only when its bytes are written (exports write models larger than memory one tensor at a time). */
export interface LazyTensorToWrite {
  dims: number[];
  dtype?: TensorDtype;
  read: () => Float32Array;
}

function encode(name: string, t: TensorToWrite | LazyTensorToWrite): Uint8Array {
  const dtype = t.dtype ?? 'F32';
  const data = 'read' in t ? t.read() : t.data;
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new Error(`writeSafetensors: tensor ${name} has ${data.length} values, shape [${t.dims}] needs ${count}`);
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const half = dtype === 'F16' ? float32ToFloat16(data) : float32ToBfloat16(data);
  return new Uint8Array(half.buffer);
}

/**
 * Writes a safetensors file deterministically: tensors sorted by element size (largest first, so every
 * tensor stays aligned to its own size) then by name, header JSON padded with spaces to a multiple of 8.
 */
export function writeSafetensors(file: string, tensors: ReadonlyMap<string, TensorToWrite | LazyTensorToWrite>, metadata: Record<string, string> = {}): void {
  const names = [...tensors.keys()].sort((a, b) => {
    const sa = DTYPE_BYTES[tensors.get(a)!.dtype ?? 'F32'];
    const sb = DTYPE_BYTES[tensors.get(b)!.dtype ?? 'F32'];
    return sb - sa || (a < b ? -1 : a > b ? 1 : 0);
  });
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const dtype = t.dtype ?? 'F32';
    const count = t.dims.reduce((a, b) => a * b, 1);
    if ('data' in t && count !== t.data.length) throw new Error(`writeSafetensors: tensor ${name} has ${t.data.length} values, shape [${t.dims}] needs ${count}`);
    const bytes = count * DTYPE_BYTES[dtype];
    header[name] = { dtype, shape: t.dims, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const jsonBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(jsonBytes.length));
  writeFileAtomically(file, (fd) => {
    writeAll(fd, len);
    writeAll(fd, jsonBytes);
    for (const name of names) writeAll(fd, encode(name, tensors.get(name)!));
  });
}
