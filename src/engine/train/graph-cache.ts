// Built graphs cached on disk beside the model's weight file, keyed by model fingerprint + graph kind + options.
import { createHash } from 'node:crypto';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Graph } from '../onnx/graph.ts';
import type { WeightCache } from '../models/weight-cache.ts';

/** Bumped whenever the graph builders change what they emit, so stale cached graphs are never reused. */
export const GRAPH_FORMAT = 2;

/**
 * Path of the cached graph `kind` for `options` (anything JSON), building and writing it first when
 * absent. Graphs live in the weight cache's folder because ORT only reads external data beside the model file:
 * `<cacheDir>/graph-<kind>-<sha256(format, weights fingerprint, dtype, kind, options)[:16]>.onnx`.
 */
export function cachedGraph(cache: WeightCache, kind: string, options: unknown, build: () => Graph): string {
  const key = JSON.stringify({ format: GRAPH_FORMAT, fingerprint: cache.manifest.fingerprint, dtype: cache.manifest.dtype, kind, options });
  const hash = createHash('sha256').update(key).digest('hex').slice(0, 16);
  const path = join(dirname(cache.dataPath), `graph-${kind}-${hash}.onnx`);
  if (!existsSync(path)) {
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, build().serialize());
    renameSync(tmp, path);
  }
  return path;
}
