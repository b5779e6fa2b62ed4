// GGUF v3 files (llama.cpp's format): metadata key/values, tensor infos and 32-byte-aligned tensor data, written
// tensor by tensor; F32, F16, BF16, Q8_0 and Q4_0 encodings. Layout: "GGUF", u32 version, u64 tensor count, u64 kv
// count, the kvs, the tensor infos (name, n_dims, dims innermost first, ggml type, offset), padding, the data block.
import { writeAll, writeFileAtomically } from '../atomic-file.ts';
import { float32ToBfloat16, float32ToFloat16 } from './safetensors.ts';

export const GGUF_ALIGNMENT = 32;
const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const GGUF_VERSION = 3;

/** GGUF metadata value types (gguf.h). */
const ValueType = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;

/** A metadata value with its GGUF type; arrays hold one element type. */
export type GgufValue =
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'u32[]'; value: ArrayLike<number> }
  | { type: 'i32[]'; value: ArrayLike<number> }
  | { type: 'f32[]'; value: ArrayLike<number> }
  | { type: 'string[]'; value: readonly string[] };

export const u32 = (value: number): GgufValue => ({ type: 'u32', value });
export const f32 = (value: number): GgufValue => ({ type: 'f32', value });
export const str = (value: string): GgufValue => ({ type: 'string', value });
export const bool = (value: boolean): GgufValue => ({ type: 'bool', value });

/** Tensor encodings this writer produces, with their ggml type ids. */
export type GgufTensorType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';
const GGML_TYPE: Record<GgufTensorType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, BF16: 30 };
/** Values per block of the block-quantized types: Q8_0 is an f16 scale + 32 int8s (34 bytes), Q4_0 an f16 scale + 32 nibbles (18 bytes). */
const BLOCK = 32;
const BLOCK_BYTES = { Q8_0: 34, Q4_0: 18 } as const;

/** One tensor to write. `dims` in row-major (numpy/HF) order; GGUF stores them innermost first. */
export interface GgufTensor {
  name: string;
  dims: number[];
  type: GgufTensorType;
  /** Called once, when the tensor's bytes are written: tensors are produced one at a time, never all in memory. */
  data: () => Float32Array;
}

const isBlockType = (type: GgufTensorType): type is keyof typeof BLOCK_BYTES => type in BLOCK_BYTES;

/** Whether `type` can encode a tensor of these dims (block types need rows that are whole blocks). */
export function canEncode(type: GgufTensorType, dims: readonly number[]): boolean {
  return !isBlockType(type) || dims[dims.length - 1] % BLOCK === 0;
}

function byteSize(type: GgufTensorType, count: number): number {
  if (type === 'F32') return count * 4;
  if (isBlockType(type)) return (count / BLOCK) * BLOCK_BYTES[type];
  return count * 2;
}

/**
 * Q8_0 as llama.cpp quantizes it: per block of 32, d = max|x| / 127 (stored as f16), q = round(x / d) half away from zero.
 * The quants use the f32 d, not its f16 rounding, exactly as ggml's quantize_row_q8_0_ref.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % BLOCK !== 0) throw new Error(`Q8_0 needs a multiple of ${BLOCK} values, got ${x.length}`);
  const blocks = x.length / BLOCK;
  const out = new Uint8Array(blocks * 34);
  const view = new DataView(out.buffer);
  const scale = new Float32Array(1);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < BLOCK; i++) amax = Math.max(amax, Math.abs(x[b * BLOCK + i]));
    scale[0] = amax / 127;
    const d = scale[0];
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, float32ToFloat16(scale)[0], true);
    for (let i = 0; i < BLOCK; i++) {
      const v = Math.fround(x[b * BLOCK + i] * id);
      view.setInt8(b * 34 + 2 + i, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return out;
}

/**
 * Q4_0 as llama.cpp quantizes it (quantize_row_q4_0_ref): per block of 32, d = (the value of largest magnitude) / −8
 * (stored as f16), q = min(15, trunc(x / d + 8.5)); byte j holds value j in its low nibble and value j + 16 in its high one.
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % BLOCK !== 0) throw new Error(`Q4_0 needs a multiple of ${BLOCK} values, got ${x.length}`);
  const blocks = x.length / BLOCK;
  const out = new Uint8Array(blocks * 18);
  const view = new DataView(out.buffer);
  const scale = new Float32Array(1);
  const nibble = (v: number) => Math.min(15, Math.trunc(Math.fround(v + 8.5)));
  for (let b = 0; b < blocks; b++) {
    const x0 = b * BLOCK;
    let amax = 0;
    let max = 0;
    for (let i = 0; i < BLOCK; i++) {
      if (amax < Math.abs(x[x0 + i])) {
        amax = Math.abs(x[x0 + i]);
        max = x[x0 + i];
      }
    }
    scale[0] = max / -8;
    const d = scale[0];
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(b * 18, float32ToFloat16(scale)[0], true);
    for (let j = 0; j < BLOCK / 2; j++) {
      const lo = nibble(Math.fround(x[x0 + j] * id));
      const hi = nibble(Math.fround(x[x0 + BLOCK / 2 + j] * id));
      out[b * 18 + 2 + j] = lo | (hi << 4);
    }
  }
  return out;
}

function encodeTensor(type: GgufTensorType, data: Float32Array): Uint8Array {
  switch (type) {
    case 'F32':
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    case 'F16':
      return new Uint8Array(float32ToFloat16(data).buffer);
    case 'BF16':
      return new Uint8Array(float32ToBfloat16(data).buffer);
    case 'Q8_0':
      return quantizeQ8_0(data);
    case 'Q4_0':
      return quantizeQ4_0(data);
  }
}

/** Little-endian byte builder for the header (metadata and tensor infos). */
class HeaderBytes {
  private chunks: Buffer[] = [];
  u32(v: number) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.chunks.push(b);
  }
  u64(v: number) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.chunks.push(b);
  }
  string(s: string) {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.chunks.push(bytes);
  }
  typed(kind: 'i32' | 'u32' | 'f32', values: ArrayLike<number>) {
    const b = Buffer.alloc(4 * values.length);
    for (let i = 0; i < values.length; i++) {
      if (kind === 'i32') b.writeInt32LE(values[i], 4 * i);
      else if (kind === 'u32') b.writeUInt32LE(values[i], 4 * i);
      else b.writeFloatLE(values[i], 4 * i);
    }
    this.chunks.push(b);
  }
  value(v: GgufValue) {
    const scalar = { u32: ValueType.UINT32, i32: ValueType.INT32, f32: ValueType.FLOAT32 } as const;
    switch (v.type) {
      case 'u32':
      case 'i32':
      case 'f32':
        this.u32(scalar[v.type]);
        this.typed(v.type, [v.value]);
        return;
      case 'bool':
        this.u32(ValueType.BOOL);
        this.chunks.push(Buffer.from([v.value ? 1 : 0]));
        return;
      case 'string':
        this.u32(ValueType.STRING);
        this.string(v.value);
        return;
      case 'string[]':
        this.u32(ValueType.ARRAY);
        this.u32(ValueType.STRING);
        this.u64(v.value.length);
        for (const s of v.value) this.string(s);
        return;
      default: {
        const kind = v.type.slice(0, 3) as 'i32' | 'u32' | 'f32';
        this.u32(ValueType.ARRAY);
        this.u32(scalar[kind]);
        this.u64(v.value.length);
        this.typed(kind, v.value);
      }
    }
  }
  get length() {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }
  padTo(alignment: number) {
    this.chunks.push(Buffer.alloc((alignment - (this.length % alignment)) % alignment));
  }
  bytes() {
    return Buffer.concat(this.chunks);
  }
}

const padding = (n: number) => (GGUF_ALIGNMENT - (n % GGUF_ALIGNMENT)) % GGUF_ALIGNMENT;

/**
 * Writes a GGUF v3 file atomically: metadata in the given order (general.alignment added), then tensors in the given
 * order, each at a 32-byte-aligned offset. Throws naming the tensor when its data does not match its dims or type.
 */
export function writeGguf(file: string, metadata: ReadonlyMap<string, GgufValue>, tensors: readonly GgufTensor[]): void {
  const kvs = new Map(metadata);
  kvs.set('general.alignment', u32(GGUF_ALIGNMENT));
  const header = new HeaderBytes();
  header.u32(GGUF_MAGIC);
  header.u32(GGUF_VERSION);
  header.u64(tensors.length);
  header.u64(kvs.size);
  for (const [key, value] of kvs) {
    header.string(key);
    header.value(value);
  }
  let offset = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    if (!canEncode(t.type, t.dims)) throw new Error(`GGUF tensor ${t.name} [${t.dims}]: ${t.type} needs rows that are a multiple of ${BLOCK}`);
    const size = byteSize(t.type, t.dims.reduce((a, b) => a * b, 1));
    header.string(t.name);
    header.u32(t.dims.length);
    for (const d of [...t.dims].reverse()) header.u64(d);
    header.u32(GGML_TYPE[t.type]);
    header.u64(offset);
    sizes.push(size);
    offset += size + padding(size);
  }
  header.padTo(GGUF_ALIGNMENT);
  writeFileAtomically(file, (fd) => {
    writeAll(fd, header.bytes());
    tensors.forEach((t, i) => {
      const data = t.data();
      const count = t.dims.reduce((a, b) => a * b, 1);
      if (data.length !== count) throw new Error(`GGUF tensor ${t.name}: ${data.length} values, shape [${t.dims}] needs ${count}`);
      writeAll(fd, encodeTensor(t.type, data));
      writeAll(fd, new Uint8Array(padding(sizes[i])));
    });
  });
}
