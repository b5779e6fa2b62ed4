// The compute-dtype weight cache of a base model: converted once, tensor by tensor, into one file with 4096-aligned offsets (DESIGN decision 4),
// at a base precision: fp32, or every matrix (projections, embedding, LM head) block-quantized (nf4/int4/int8) with the norms and biases fp32.
// ORT memory-maps aligned external data, so every session of the model shares the same pages. The user's files are only read.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeAll, writeFileAtomically, writeTextAtomically } from '../atomic-file.ts';
import { baseParameters, EMBED_TOKENS, LM_HEAD, type ParameterSpec } from './parameters.ts';
import { quantizable, quantize, QUANT_LAYOUT, type Precision, type QuantFormat, type QuantizedTensor } from './quantize.ts';
import type { ModelConfig } from './config.ts';
import { parseModelConfig } from './config.ts';
import { checkModelTensors } from './model-dir.ts';
import { float32ToFloat16, listModelTensors, readTensor } from './safetensors.ts';

export type ComputeDtype = 'float32' | 'float16';
export const WEIGHT_ALIGNMENT = 4096;
/** Bumped when the cache layout changes, so old caches rebuild. */
const CACHE_FORMAT = 1;
/**
 * Bumped when what a quantized cache holds changes (3: the embedding and LM head quantized too, nf4 ones in blocks of
 * 32; 1 kept them fp32), so quantized caches, and the graphs built over them, rebuild; fp32 caches keep their fingerprint.
 */
export const QUANTIZED_LAYOUT = 3;

/** Where a block-quantized projection lives: its code bytes and its fp32 block scales (see QuantizedTensor). */
export interface QuantizedCacheEntry {
  format: QuantFormat;
  dims: [number, number]; // [N, K], HF [out, in]
  blockSize: number;
  codes: { offset: number; length: number };
  scales: { offset: number; length: number };
}

export interface WeightCacheEntry {
  offset: number; // bytes from the start of the data file, a multiple of WEIGHT_ALIGNMENT
  length: number; // bytes
  dims: number[];
  dtype: ComputeDtype;
}

export interface WeightCacheManifest {
  format: number;
  dtype: ComputeDtype;
  precision: Precision;
  fingerprint: string; // of the source files; a change rebuilds the cache
  dataFile: string; // file name in the cache folder (unique per fingerprint)
  totalBytes: number;
  tensors: Record<string, WeightCacheEntry>; // parameter-table name -> where it is (tensors kept in the compute dtype)
  quantized: Record<string, QuantizedCacheEntry>; // parameter-table name -> where it is (block-quantized projections)
}

export interface WeightCache {
  dataPath: string; // absolute path of the data file (put graphs beside it: ORT refuses external data elsewhere)
  manifestPath: string;
  manifest: WeightCacheManifest;
}

/** Hash of the source files' names, sizes and modification times (cheap: no weight bytes are read), and of the cache layout at `precision`. */
export function modelFingerprint(modelDir: string, precision: Precision = 'fp32'): string {
  const files = readdirSync(modelDir)
    .filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f === 'model.safetensors.index.json')
    .sort()
    .map((f) => {
      const s = statSync(join(modelDir, f));
      return [f, s.size, s.mtimeMs];
    });
  const layout = precision === 'fp32' ? {} : { quantized: QUANTIZED_LAYOUT };
  return createHash('sha256').update(JSON.stringify({ format: CACHE_FORMAT, ...layout, files })).digest('hex');
}

/** The cache's file stem: `weights.float32` for fp32 (as before precisions existed), `weights.nf4.float32` etc. else. */
function cacheStem(dtype: ComputeDtype, precision: Precision): string {
  return precision === 'fp32' ? `weights.${dtype}` : `weights.${precision}.${dtype}`;
}

function readValidManifest(manifestPath: string, dtype: ComputeDtype, precision: Precision, fingerprint: string, cacheDir: string): WeightCacheManifest | null {
  if (!existsSync(manifestPath)) return null;
  try {
    const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as WeightCacheManifest;
    if (m.format !== CACHE_FORMAT || m.dtype !== dtype || (m.precision ?? 'fp32') !== precision || m.fingerprint !== fingerprint) return null;
    const dataPath = join(cacheDir, m.dataFile);
    if (!existsSync(dataPath) || statSync(dataPath).size !== m.totalBytes) return null;
    return { ...m, precision, quantized: m.quantized ?? {} };
  } catch {
    return null; // a damaged manifest is rebuilt like a stale one
  }
}

/**
 * Weights per block of a quantized parameter: the format's, except nf4's vocabulary matrices (embedding, LM head) in
 * blocks of 32, not 64. Every logit reads the head and every position an embedding row: with them fp32 the built-in
 * model's nf4 job's mean training loss was 1.2 % from fp32's, with them nf4 in blocks of 64 5.1 %, in blocks of 32
 * 4.2 % (the bound is 5 %); 32 costs 1/16 byte a parameter more on those matrices (1B Llama: 0.576 instead of
 * 0.5625 bytes a parameter overall).
 */
export function quantizedBlockSize(spec: ParameterSpec, format: QuantFormat): number {
  return format === 'nf4' && (spec.name === EMBED_TOKENS || spec.name === LM_HEAD) ? 32 : QUANT_LAYOUT[format].blockSize;
}

/**
 * Whether the cache at `precision` holds this parameter block-quantized: every matrix whose rows the blocks tile (the
 * projections, the embedding and an untied LM head; a tied head is the embedding). Norms and biases stay fp32.
 */
export function isQuantizedParameter(spec: ParameterSpec, precision: Precision): precision is QuantFormat {
  return precision !== 'fp32' && quantizable(spec.dims, precision, quantizedBlockSize(spec, precision));
}

/** A quantized parameter's codes and scales as the cache holds them (quantizedBlockSize's blocks). */
export function quantizeParameter(spec: ParameterSpec, data: Float32Array, format: QuantFormat): QuantizedTensor {
  return quantize(data, spec.dims as [number, number], format, quantizedBlockSize(spec, format));
}

/**
 * Returns the model's weight cache at `precision` (default fp32) in `cacheDir` (one folder per base model), building it
 * first when absent or when the model's files changed. Memory stays bounded by the largest tensor. Safe against a crash
 * midway (temp files + rename; the manifest is renamed last and names a data file unique to the fingerprint).
 */
export function ensureWeightCache(modelDir: string, cacheDir: string, options: { dtype: ComputeDtype; precision?: Precision }): WeightCache {
  const existing = readWeightCache(modelDir, cacheDir, options);
  if (existing) return existing;
  const { dtype } = options;
  const config = parseModelConfig(JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')));
  const sources = checkModelTensors(config, listModelTensors(modelDir), modelDir);
  const precision = options.precision ?? 'fp32';
  const o = { dtype, precision, fingerprint: modelFingerprint(modelDir, precision) };
  return writeWeightCache(cacheDir, config, o, (spec) => readTensor(sources.get(spec.name)!).data);
}

/** The model's weight cache at `precision` when one is built and current (the model's files unchanged since), else null. */
export function readWeightCache(modelDir: string, cacheDir: string, options: { dtype: ComputeDtype; precision?: Precision }): WeightCache | null {
  const { dtype } = options;
  const precision = options.precision ?? 'fp32';
  const manifestPath = join(cacheDir, `${cacheStem(dtype, precision)}.json`);
  const existing = readValidManifest(manifestPath, dtype, precision, modelFingerprint(modelDir, precision), cacheDir);
  return existing ? { dataPath: join(cacheDir, existing.dataFile), manifestPath, manifest: existing } : null;
}

/**
 * Writes a weight cache from `read` (each base parameter's fp32 values, asked for one at a time in the parameter
 * table's order, or for a quantized parameter its already quantized form) and returns it. ensureWeightCache reads the
 * model's safetensors; the bench writes seeded codes of shapes too big to hold in fp32 straight into a quantized cache.
 */
export function writeWeightCache(
  cacheDir: string,
  config: ModelConfig,
  o: { dtype: ComputeDtype; precision: Precision; fingerprint: string },
  read: (spec: ParameterSpec) => Float32Array | QuantizedTensor,
): WeightCache {
  const { dtype, precision, fingerprint } = o;
  const stem = cacheStem(dtype, precision);
  const manifestPath = join(cacheDir, `${stem}.json`);
  mkdirSync(cacheDir, { recursive: true });
  const dataFile = `${stem}.${fingerprint.slice(0, 16)}.bin`;
  const tensors: Record<string, WeightCacheEntry> = {};
  const quantized: Record<string, QuantizedCacheEntry> = {};
  let offset = 0;
  writeFileAtomically(join(cacheDir, dataFile), (fd) => {
    /** Writes bytes at the next aligned offset; returns where they went. */
    const put = (bytes: Uint8Array) => {
      const padding = (WEIGHT_ALIGNMENT - (offset % WEIGHT_ALIGNMENT)) % WEIGHT_ALIGNMENT;
      if (padding) writeAll(fd, new Uint8Array(padding));
      offset += padding;
      writeAll(fd, bytes);
      const at = { offset, length: bytes.length };
      offset += bytes.length;
      return at;
    };
    for (const spec of baseParameters(config)) {
      const data = read(spec);
      if (isQuantizedParameter(spec, precision)) {
        const q = data instanceof Float32Array ? quantizeParameter(spec, data, precision) : data;
        const want = `${precision} [${spec.dims}] in blocks of ${quantizedBlockSize(spec, precision)}`;
        if (`${q.format} [${q.dims}] in blocks of ${q.blockSize}` !== want) throw new Error(`weight cache: ${spec.name} came as ${q.format} [${q.dims}] in blocks of ${q.blockSize}, not ${want}`);
        const codes = put(q.codes);
        const scales = put(new Uint8Array(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength));
        quantized[spec.name] = { format: precision, dims: q.dims, blockSize: q.blockSize, codes, scales };
        continue;
      }
      if (!(data instanceof Float32Array)) throw new Error(`weight cache: ${spec.name} is not quantized at ${precision}, so it needs its values`);
      const bytes = dtype === 'float32' ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(float32ToFloat16(data).buffer);
      tensors[spec.name] = { ...put(bytes), dims: spec.dims, dtype };
    }
  });
  const manifest: WeightCacheManifest = { format: CACHE_FORMAT, dtype, precision, fingerprint, dataFile, totalBytes: offset, tensors, quantized };
  writeTextAtomically(manifestPath, JSON.stringify(manifest, null, 1));
  // Data files of older fingerprints are no longer named by any manifest (open mappings of them stay valid on POSIX).
  for (const f of readdirSync(cacheDir)) {
    if (f.startsWith(`${stem}.`) && f.endsWith('.bin') && f !== dataFile) unlinkSync(join(cacheDir, f));
  }
  return { dataPath: join(cacheDir, dataFile), manifestPath, manifest };
}
