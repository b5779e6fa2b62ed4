// The `merged` export: a complete Hugging Face model directory with the adapter folded into the weights, which
// transformers, vLLM and localtune itself load as a plain model (sharded with an index past the shard size, as HF saves).
import { copyFileSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeTextAtomically } from '../atomic-file.ts';
import { baseParameters } from '../models/parameters.ts';
import { writeSafetensors, type LazyTensorToWrite, type TensorDtype } from '../models/safetensors.ts';
import type { ExportSource } from './export-source.ts';

/** transformers' default max_shard_size ("5GB", decimal). */
export const DEFAULT_SHARD_BYTES = 5_000_000_000;

const DTYPE_BYTES: Record<TensorDtype, number> = { F32: 4, F16: 2, BF16: 2 };
const TORCH_DTYPE: Record<TensorDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** Weight files (and their index) are rewritten; every other top-level file (tokenizer, templates, licence, …) is copied. */
const WEIGHT_FILE = /\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx)$|^model\.safetensors\.index\.json$|^pytorch_model\.bin\.index\.json$/;

/** Parameter names grouped into shards of at most `maxShardBytes` (a tensor larger than that gets a shard of its own). */
function shardNames(names: string[], bytes: (name: string) => number, maxShardBytes: number): string[][] {
  const shards: string[][] = [[]];
  let size = 0;
  for (const name of names) {
    const b = bytes(name);
    if (size > 0 && size + b > maxShardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(name);
    size += b;
  }
  return shards;
}

/**
 * Writes the merged model into `outDir` (created; it should be empty) in `dtype` (default: the base's).
 * One tensor is in memory at a time. Returns the files written.
 */
export function writeMergedDir(src: ExportSource, outDir: string, o: { dtype?: TensorDtype; maxShardBytes?: number } = {}): string[] {
  const dtype = o.dtype ?? src.baseDtype;
  mkdirSync(outDir, { recursive: true });
  const written: string[] = [];
  for (const f of readdirSync(src.model.dir).sort()) {
    const from = join(src.model.dir, f);
    if (f.startsWith('.') || f === 'config.json' || WEIGHT_FILE.test(f) || !statSync(from).isFile()) continue;
    copyFileSync(from, join(outDir, f));
    written.push(f);
  }
  const config = JSON.parse(readFileSync(join(src.model.dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  config.torch_dtype = TORCH_DTYPE[dtype];
  writeTextAtomically(join(outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  written.push('config.json');

  const specs = baseParameters(src.model.config);
  const dims = new Map(specs.map((s) => [s.name, s.dims]));
  const bytes = (name: string) => dims.get(name)!.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
  const shards = shardNames(specs.map((s) => s.name), bytes, o.maxShardBytes ?? DEFAULT_SHARD_BYTES);
  const lazy = (name: string): LazyTensorToWrite => ({ dims: dims.get(name)!, dtype, read: () => src.tensor(name).data });
  if (shards.length === 1) {
    writeSafetensors(join(outDir, 'model.safetensors'), new Map(shards[0].map((n) => [n, lazy(n)])), { format: 'pt' });
    return [...written, 'model.safetensors'];
  }
  const weightMap: Record<string, string> = {};
  const pad = (i: number) => String(i).padStart(5, '0');
  shards.forEach((names, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    writeSafetensors(join(outDir, file), new Map(names.map((n) => [n, lazy(n)])), { format: 'pt' });
    for (const n of names) weightMap[n] = file;
    written.push(file);
  });
  const index = { metadata: { total_size: specs.reduce((n, s) => n + bytes(s.name), 0) }, weight_map: weightMap };
  writeTextAtomically(join(outDir, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
  return [...written, 'model.safetensors.index.json'];
}
