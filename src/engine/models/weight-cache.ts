// The compute-dtype weight cache of a base model: converted once, tensor by tensor, into one file with 4096-aligned offsets (DESIGN decision 4).
// ORT memory-maps aligned external data, so every session of the model shares the same pages. The user's files are only read.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeAll, writeFileAtomically, writeTextAtomically } from '../atomic-file.ts';
import { baseParameters } from './parameters.ts';
import { parseModelConfig } from './config.ts';
import { checkModelTensors } from './model-dir.ts';
import { float32ToFloat16, listModelTensors, readTensor } from './safetensors.ts';

export type ComputeDtype = 'float32' | 'float16';
export const WEIGHT_ALIGNMENT = 4096;
/** Bumped when the cache layout changes, so old caches rebuild. */
const CACHE_FORMAT = 1;

export interface WeightCacheEntry {
  offset: number; // bytes from the start of the data file, a multiple of WEIGHT_ALIGNMENT
  length: number; // bytes
  dims: number[];
  dtype: ComputeDtype;
}

export interface WeightCacheManifest {
  format: number;
  dtype: ComputeDtype;
  fingerprint: string; // of the source files; a change rebuilds the cache
  dataFile: string; // file name in the cache folder (unique per fingerprint)
  totalBytes: number;
  tensors: Record<string, WeightCacheEntry>; // parameter-table name -> where it is
}

export interface WeightCache {
  dataPath: string; // absolute path of the data file (put graphs beside it: ORT refuses external data elsewhere)
  manifestPath: string;
  manifest: WeightCacheManifest;
}

/** Hash of the source files' names, sizes and modification times (cheap: no weight bytes are read). */
export function modelFingerprint(modelDir: string): string {
  const files = readdirSync(modelDir)
    .filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f === 'model.safetensors.index.json')
    .sort()
    .map((f) => {
      const s = statSync(join(modelDir, f));
      return [f, s.size, s.mtimeMs];
    });
  return createHash('sha256').update(JSON.stringify({ format: CACHE_FORMAT, files })).digest('hex');
}

function manifestName(dtype: ComputeDtype): string {
  return `weights.${dtype}.json`;
}

function readValidManifest(manifestPath: string, dtype: ComputeDtype, fingerprint: string, cacheDir: string): WeightCacheManifest | null {
  if (!existsSync(manifestPath)) return null;
  try {
    const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as WeightCacheManifest;
    if (m.format !== CACHE_FORMAT || m.dtype !== dtype || m.fingerprint !== fingerprint) return null;
    const dataPath = join(cacheDir, m.dataFile);
    if (!existsSync(dataPath) || statSync(dataPath).size !== m.totalBytes) return null;
    return m;
  } catch {
    return null; // a damaged manifest is rebuilt like a stale one
  }
}

/**
 * Returns the model's weight cache in `cacheDir` (one folder per base model), building it first when absent
 * or when the model's files changed. Memory stays bounded by the largest tensor. Safe against a crash midway
 * (temp files + rename; the manifest is renamed last and names a data file unique to the fingerprint).
 */
export function ensureWeightCache(modelDir: string, cacheDir: string, options: { dtype: ComputeDtype }): WeightCache {
  const { dtype } = options;
  const fingerprint = modelFingerprint(modelDir);
  const manifestPath = join(cacheDir, manifestName(dtype));
  const existing = readValidManifest(manifestPath, dtype, fingerprint, cacheDir);
  if (existing) return { dataPath: join(cacheDir, existing.dataFile), manifestPath, manifest: existing };

  const config = parseModelConfig(JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')));
  const sources = checkModelTensors(config, listModelTensors(modelDir), modelDir);
  mkdirSync(cacheDir, { recursive: true });
  const dataFile = `weights.${dtype}.${fingerprint.slice(0, 16)}.bin`;
  const tensors: Record<string, WeightCacheEntry> = {};
  const bytesPer = dtype === 'float32' ? 4 : 2;
  let offset = 0;
  writeFileAtomically(join(cacheDir, dataFile), (fd) => {
    for (const spec of baseParameters(config)) {
      const padding = (WEIGHT_ALIGNMENT - (offset % WEIGHT_ALIGNMENT)) % WEIGHT_ALIGNMENT;
      if (padding) writeAll(fd, new Uint8Array(padding));
      offset += padding;
      const { data } = readTensor(sources.get(spec.name)!);
      const bytes = dtype === 'float32' ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(float32ToFloat16(data).buffer);
      writeAll(fd, bytes);
      tensors[spec.name] = { offset, length: data.length * bytesPer, dims: spec.dims, dtype };
      offset += bytes.length;
    }
  });
  const manifest: WeightCacheManifest = { format: CACHE_FORMAT, dtype, fingerprint, dataFile, totalBytes: offset, tensors };
  writeTextAtomically(manifestPath, JSON.stringify(manifest, null, 1));
  // Data files of older fingerprints are no longer named by any manifest (open mappings of them stay valid on POSIX).
  for (const f of readdirSync(cacheDir)) {
    if (f.startsWith(`weights.${dtype}.`) && f.endsWith('.bin') && f !== dataFile) unlinkSync(join(cacheDir, f));
  }
  return { dataPath: join(cacheDir, dataFile), manifestPath, manifest };
}
