// Base weights as graph tensors: external initializers into the aligned weight cache, or embedded ones for tests.
import { basename } from 'node:path';
import type { Graph, Tensor, TypedData } from '../onnx/graph.ts';
import type { WeightCache } from './weight-cache.ts';

/** Base weights by HF name, as tensors of one graph. */
export type WeightSource = (name: string) => Tensor;
/** Makes a graph's WeightSource (each weight becomes one initializer, on first use). */
export type WeightFactory = (g: Graph) => WeightSource;

/** Base weights embedded in the graph (tests and the float64 checks). */
export function embeddedWeights(weights: ReadonlyMap<string, { dims: number[]; data: TypedData }>): WeightFactory {
  return (g) => {
    const made = new Map<string, Tensor>();
    return (name) => {
      const w = weights.get(name);
      if (!w) throw new Error(`no base weight ${name}`);
      if (!made.has(name)) made.set(name, g.initializer(name, g.float, w.dims, w.data));
      return made.get(name)!;
    };
  };
}

/** Base weights as external data in the aligned cache file; save the graph beside it (or load it with the folder option). */
export function cachedWeights(cache: WeightCache): WeightFactory {
  return (g) => {
    const made = new Map<string, Tensor>();
    return (name) => {
      const e = cache.manifest.tensors[name];
      if (!e) throw new Error(`weight cache ${cache.dataPath} has no tensor ${name}`);
      if (e.dtype !== g.float) throw new Error(`weight cache holds ${e.dtype}, graph computes in ${g.float}`);
      if (!made.has(name)) made.set(name, g.externalInitializer(name, g.float, e.dims, { location: basename(cache.dataPath), offset: e.offset, length: e.length }));
      return made.get(name)!;
    };
  };
}
