// Built graphs cached on disk, keyed by a hash of what they were built from (the caller's key + graph kind).
import { createHash } from 'node:crypto';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Graph } from './graph.ts';

/** Bumped whenever the graph builders change what they emit, so stale cached graphs are never reused. */
export const GRAPH_FORMAT = 11;

/**
 * Path of the cached graph `<folder>/graph-<kind>-<sha256(format, kind, key)[:16]>.onnx`, built and
 * written atomically first when absent. `key` must name everything the graph depends on (model
 * fingerprint, dtype, shapes, options). Graphs with external weights must live in the weight file's
 * folder: ORT reads external data only beside the model file.
 */
export function cachedGraph(folder: string, kind: string, key: unknown, build: () => Graph): string {
  const hash = createHash('sha256')
    .update(JSON.stringify({ format: GRAPH_FORMAT, kind, key }))
    .digest('hex')
    .slice(0, 16);
  const path = join(folder, `graph-${kind}-${hash}.onnx`);
  if (!existsSync(path)) {
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, build().serialize());
    renameSync(tmp, path);
  }
  return path;
}
