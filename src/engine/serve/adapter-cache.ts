// Serving adapters: PEFT files loaded on first use into the generation graph's layout (Aᵀ, scaled Bᵀ), kept under a byte budget (LRU).
import type { ModelConfig } from '../models/config.ts';
import { LORA_TARGETS, loraModules, type LoraTarget } from '../models/parameters.ts';
import { loadAdapter } from '../lora/peft.ts';
import { loraScaling, type LoraConfig } from '../lora/config.ts';
import type { AdapterTensors } from '../lora/init.ts';

// Dims: R adapter rank, in/out a projection's features, L layers.

/** One adapter ready to feed: per (layer, target) slot, Aᵀ [in, R] and (alpha/r)·Bᵀ [R, out]. */
export interface PreparedAdapter {
  /** Cache key (the caller's name for the adapter, e.g. its model id). */
  key: string;
  rank: number;
  targets: ReadonlySet<LoraTarget>;
  /** Slot index = layer · 7 + LORA_TARGETS index; absent for modules the adapter does not touch. */
  a: Map<number, Float32Array>; // [in, R]
  b: Map<number, Float32Array>; // [R, out]
  bytes: number;
}

export const slotIndex = (layer: number, target: LoraTarget) => layer * LORA_TARGETS.length + LORA_TARGETS.indexOf(target);

/** Reads a PEFT adapter directory and prepares it (prepareAdapterTensors). */
export function prepareAdapter(key: string, dir: string, config: ModelConfig): PreparedAdapter {
  const loaded = loadAdapter(dir, config);
  return prepareAdapterTensors(key, loaded.config, loaded.tensors, config);
}

/**
 * Converts adapter tensors (PEFT names and layout: from a file, or a trainer's in memory): A [R, in] → Aᵀ [in, R];
 * B [out, R] → (alpha/r)·Bᵀ [R, out], so the graph needs no per-row scale and bare-base rows are plain zeros.
 */
export function prepareAdapterTensors(key: string, lora: LoraConfig, tensors: AdapterTensors, config: ModelConfig): PreparedAdapter {
  const R = lora.r;
  const scale = loraScaling(lora);
  const a = new Map<number, Float32Array>();
  const b = new Map<number, Float32Array>();
  let bytes = 0;
  for (const m of loraModules(config, lora.targetModules)) {
    const src = tensors.get(m.loraA)!.data; // [R, in]
    const at = new Float32Array(m.in * R); // [in, R]
    for (let r = 0; r < R; r++) for (let i = 0; i < m.in; i++) at[i * R + r] = src[r * m.in + i];
    const srcB = tensors.get(m.loraB)!.data; // [out, R]
    const bt = new Float32Array(R * m.out); // [R, out]
    for (let o = 0; o < m.out; o++) for (let r = 0; r < R; r++) bt[r * m.out + o] = scale * srcB[o * R + r];
    a.set(slotIndex(m.layer, m.target), at);
    b.set(slotIndex(m.layer, m.target), bt);
    bytes += at.byteLength + bt.byteLength;
  }
  return { key, rank: R, targets: new Set(lora.targetModules), a, b, bytes };
}

export interface AdapterCacheStats {
  keys: string[]; // least recently used first
  bytes: number;
  budgetBytes: number;
}

/** What happened to an adapter in the cache: served from memory, loaded from disk, or dropped. */
export type AdapterCacheEvent = 'hit' | 'miss' | 'evict';

export interface AdapterCache {
  /** The adapter under `key`, loaded from `dir` on a miss (evicting least recently used ones past the budget). */
  get(key: string, dir: string, config: ModelConfig): PreparedAdapter;
  evict(key: string): boolean;
  stats(): AdapterCacheStats;
}

/**
 * LRU over prepared adapters. An adapter larger than the whole budget is still returned (the request needs it)
 * but only kept until the next load. Rows already running hold their own reference, so eviction never breaks them.
 */
export function createAdapterCache(
  budgetBytes: number,
  load: typeof prepareAdapter = prepareAdapter,
  onEvent: (event: AdapterCacheEvent, key: string) => void = () => {},
): AdapterCache {
  const entries = new Map<string, PreparedAdapter>(); // insertion order = recency, oldest first
  let bytes = 0;
  const remove = (key: string) => {
    const e = entries.get(key);
    if (!e) return false;
    entries.delete(key);
    bytes -= e.bytes;
    onEvent('evict', key);
    return true;
  };
  return {
    get(key, dir, config) {
      const hit = entries.get(key);
      if (hit) {
        entries.delete(key);
        entries.set(key, hit);
        onEvent('hit', key);
        return hit;
      }
      onEvent('miss', key);
      const made = load(key, dir, config);
      for (const oldest of entries.keys()) {
        if (bytes + made.bytes <= budgetBytes) break;
        remove(oldest);
      }
      entries.set(key, made);
      bytes += made.bytes;
      return made;
    },
    evict: remove,
    stats: () => ({ keys: [...entries.keys()], bytes, budgetBytes }),
  };
}
