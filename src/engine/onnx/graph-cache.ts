// Built graphs cached on disk, keyed by a hash of what they were built from (the engine's code, the caller's key, the graph kind).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Graph } from './graph.ts';

let engineHash: string | undefined;

/**
 * A hash of every source file of the engine (the graph builders and all they call): a changed
 * builder never reuses a graph cached by an older one, with no version number to remember to bump.
 */
function engineFingerprint(): string {
  if (engineHash) return engineHash;
  const root = fileURLToPath(new URL('..', import.meta.url));
  const hash = createHash('sha256');
  const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => /\.[cm]?[jt]s$/.test(f)).sort();
  for (const f of files) hash.update(f).update('\0').update(readFileSync(join(root, f))).update('\0');
  return (engineHash = hash.digest('hex'));
}

/**
 * Path of the cached graph `<folder>/graph-<kind>-<sha256(engine code, kind, key)[:16]>.onnx`, built and
 * written atomically first when absent. `key` must name everything the graph depends on (model
 * fingerprint, dtype, shapes, options). Graphs with external weights must live in the weight file's
 * folder: ORT reads external data only beside the model file.
 */
export function cachedGraph(folder: string, kind: string, key: unknown, build: () => Graph): string {
  const hash = createHash('sha256')
    .update(JSON.stringify({ engine: engineFingerprint(), kind, key }))
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
