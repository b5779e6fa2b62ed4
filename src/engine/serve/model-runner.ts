// One base model's generation session and its JS-owned KV cache: prefill new rows, decode every active row one token, release rows.
import { dirname } from 'node:path';
import * as ort from 'onnxruntime-node';
import { attentionBias, MASKED } from '../models/llama.ts';
import type { ModelConfig } from '../models/config.ts';
import { ensureWeightCache } from '../models/weight-cache.ts';
import { LORA_TARGETS } from '../models/parameters.ts';
import { createSession, type Device, type DeviceRequest, type Session } from '../onnx/session.ts';
import { cachedGraph } from '../onnx/graph-cache.ts';
import { cachedWeights } from '../models/weight-source.ts';
import { adapterSlots, buildGenerationGraph, GEN } from './generation-graph.ts';
import { slotIndex, type PreparedAdapter } from './adapter-cache.ts';

// Dims: B rows in a run, T new positions, C cache capacity (slots per row), L layers, NKV kv heads, HD head dim, V vocab.

/** A sequence's place in the cache: `slot` is its row in the KV buffers, `length` the positions it holds. */
export interface CacheRow {
  slot: number;
  length: number;
  adapter: PreparedAdapter | null;
}

export interface RunnerOptions {
  modelDir: string;
  cacheDir: string;
  config: ModelConfig;
  contextLength: number;
  device?: DeviceRequest;
  threads?: number;
  log?: (line: string) => void;
}

/** Cache capacities grow through these buckets (capped at the context length), so attention cost follows the longest row. */
export const CAPACITY_BUCKETS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072];

export interface ModelRunner {
  device: Device;
  /** Active rows in slot order (row i holds slot i). */
  readonly rows: readonly CacheRow[];
  /**
   * Runs the prompts of new rows (each [len] ids) and appends them to the active rows; returns their last-position
   * logits [V] each, and for prompts with `scored`, the logits of every earlier position too ([len − 1, V]: position t
   * predicts token t + 1), else null.
   */
  prefill(prompts: { tokens: number[]; adapter: PreparedAdapter | null; scored?: boolean }[]): Promise<{ rows: CacheRow[]; logits: Float32Array[]; promptLogits: (Float32Array | null)[] }>;
  /** Feeds one token per active row (tokens[i] for rows[i]); returns each row's logits [V]. */
  decode(tokens: number[]): Promise<Float32Array[]>;
  /** Frees a row's slot at once (the last row moves into it). */
  release(row: CacheRow): void;
  close(): Promise<void>;
}

/**
 * Takes `row` out of `rows` (slot order: row i holds slot i). The last row moves into the freed slot: returns the
 * slot it moved from (its cached positions must move too), or null when nothing moved.
 */
export function removeRow(rows: CacheRow[], row: CacheRow): number | null {
  const i = rows.indexOf(row);
  if (i < 0) return null;
  const last = rows.pop()!;
  if (last === row) return null;
  const from = last.slot;
  last.slot = i;
  rows[i] = last;
  return from;
}

export async function createModelRunner(o: RunnerOptions): Promise<ModelRunner> {
  const { config } = o;
  const cache = ensureWeightCache(o.modelDir, o.cacheDir, { dtype: 'float32' });
  const graphPath = cachedGraph(dirname(cache.dataPath), 'generate', { weights: cache.manifest.fingerprint, dtype: cache.manifest.dtype }, () => buildGenerationGraph(config, cachedWeights(cache)));
  const session: Session = await createSession(graphPath, { device: o.device, threads: o.threads, log: o.log });
  const L = config.numLayers;
  const NKV = config.numKvHeads;
  const HD = config.headDim;
  const V = config.vocabSize;
  const slots = adapterSlots(config);
  const window = config.slidingWindow;

  const rows: CacheRow[] = [];
  let capacity = 0; // C
  let allocatedRows = 0;
  let keys: Float32Array[] = []; // per layer [allocatedRows, NKV, C, HD]
  let values: Float32Array[] = [];

  const rowFloats = () => NKV * capacity * HD;

  /** Grows the buffers (rows and/or capacity) keeping every active row's cached positions. */
  function ensureCapacity(neededRows: number, neededPositions: number): void {
    if (neededPositions > o.contextLength) throw new Error(`sequence of ${neededPositions} positions exceeds the context length ${o.contextLength}`);
    let cap = capacity;
    if (neededPositions > cap) cap = Math.min(CAPACITY_BUCKETS.find((b) => b >= neededPositions) ?? neededPositions, o.contextLength);
    let nrows = allocatedRows;
    while (nrows < neededRows) nrows = Math.max(4, nrows * 2);
    if (cap === capacity && nrows === allocatedRows) return;
    const oldCap = capacity;
    const grow = (old: Float32Array) => {
      const next = new Float32Array(nrows * NKV * cap * HD);
      // Copy each (row, head)'s cached positions to its new place: stride changes with the capacity.
      for (const r of rows) {
        for (let h = 0; h < NKV; h++) {
          const from = (r.slot * NKV + h) * oldCap * HD;
          const to = (r.slot * NKV + h) * cap * HD;
          next.set(old.subarray(from, from + r.length * HD), to);
        }
      }
      return next;
    };
    keys = Array.from({ length: L }, (_, l) => grow(keys[l] ?? new Float32Array(0)));
    values = Array.from({ length: L }, (_, l) => grow(values[l] ?? new Float32Array(0)));
    capacity = cap;
    allocatedRows = nrows;
  }

  /** Per-row adapter inputs: each module's A [B, in, R] and B [B, R, out], R the largest rank of a row adapting it. */
  let adapterFeedCache: { key: string; feeds: Record<string, ort.Tensor> } | null = null;
  function adapterFeeds(adapters: (PreparedAdapter | null)[]): Record<string, ort.Tensor> {
    const key = adapters.map((a) => a?.key ?? '').join('\u0000');
    if (adapterFeedCache?.key === key) return adapterFeedCache.feeds;
    const B = adapters.length;
    const feeds: Record<string, ort.Tensor> = {};
    const rankOf = new Map(LORA_TARGETS.map((t) => [t, Math.max(0, ...adapters.map((a) => (a?.targets.has(t) ? a.rank : 0)))]));
    for (const s of slots) {
      const R = rankOf.get(s.target)!;
      const a = new Float32Array(B * s.in * R); // [B, in, R]
      const b = new Float32Array(B * R * s.out); // [B, R, out]
      const idx = slotIndex(s.layer, s.target);
      adapters.forEach((ad, row) => {
        const at = ad?.a.get(idx);
        const bt = ad?.b.get(idx);
        if (!ad || !at || !bt) return;
        const r = ad.rank;
        if (r === R) a.set(at, row * s.in * R);
        else for (let i = 0; i < s.in; i++) a.set(at.subarray(i * r, (i + 1) * r), (row * s.in + i) * R); // zero-pad ranks r..R
        b.set(bt, row * R * s.out); // rows r..R of B stay zero
      });
      feeds[GEN.loraA(s.layer, s.target)] = new ort.Tensor('float32', a, [B, s.in, R]);
      feeds[GEN.loraB(s.layer, s.target)] = new ort.Tensor('float32', b, [B, R, s.out]);
    }
    adapterFeedCache = { key, feeds };
    return feeds;
  }

  return {
    device: session.device,
    rows,

    async prefill(prompts) {
      const B = prompts.length;
      const T = Math.max(...prompts.map((p) => p.tokens.length));
      if (prompts.some((p) => p.tokens.length === 0)) throw new Error('prefill needs at least one token per row');
      ensureCapacity(rows.length + B, T);
      const ids = new Int32Array(B * T); // [B, T]
      const positions = new BigInt64Array(B * T); // [B, T]
      const mask = new Float32Array(B * T); // [B, T] real tokens
      // Logit rows: each prompt's earlier positions when scored, then every prompt's last position.
      const scoredRows = prompts.flatMap((p, b) => (p.scored ? Array.from({ length: p.tokens.length - 1 }, (_, t) => b * T + t) : []));
      const logitRows = BigInt64Array.from([...scoredRows, ...prompts.map((p, b) => b * T + p.tokens.length - 1)], BigInt); // [K]
      prompts.forEach((p, b) => {
        p.tokens.forEach((id, t) => {
          ids[b * T + t] = id;
          positions[b * T + t] = BigInt(t);
          mask[b * T + t] = 1;
        });
      });
      const feeds: Record<string, ort.Tensor> = {
        [GEN.inputIds]: new ort.Tensor('int32', ids, [B, T]),
        [GEN.positionIds]: new ort.Tensor('int64', positions, [B, T]),
        [GEN.attentionBias]: new ort.Tensor('float32', attentionBias(B, T, mask, 0, window), [B, 1, 1, T, T]),
        [GEN.logitRows]: new ort.Tensor('int64', logitRows, [logitRows.length]),
        ...adapterFeeds(prompts.map((p) => p.adapter)),
      };
      const empty = new ort.Tensor('float32', new Float32Array(0), [B, NKV, 0, HD]); // no past
      for (let l = 0; l < L; l++) {
        feeds[GEN.pastKey(l)] = empty;
        feeds[GEN.pastValue(l)] = empty;
      }
      const out = await session.run(feeds);
      const made: CacheRow[] = prompts.map((p, b) => ({ slot: rows.length + b, length: p.tokens.length, adapter: p.adapter }));
      made.forEach((r, b) => {
        for (let l = 0; l < L; l++) {
          for (const [present, buffer] of [[out[GEN.presentKey(l)], keys[l]], [out[GEN.presentValue(l)], values[l]]] as const) {
            const src = present.data as Float32Array; // [B, NKV, T, HD]
            for (let h = 0; h < NKV; h++) {
              const from = (b * NKV + h) * T * HD;
              buffer.set(src.subarray(from, from + r.length * HD), (r.slot * NKV + h) * capacity * HD);
            }
          }
        }
      });
      rows.push(...made);
      const logits = out[GEN.logits].data as Float32Array; // [K, V]
      let at = 0;
      const promptLogits = prompts.map((p) => {
        if (!p.scored) return null;
        const n = p.tokens.length - 1;
        at += n;
        return logits.slice((at - n) * V, at * V); // [len − 1, V]
      });
      const last = scoredRows.length;
      return { rows: made, logits: made.map((_, b) => logits.slice((last + b) * V, (last + b + 1) * V)), promptLogits };
    },

    async decode(tokens) {
      const B = rows.length;
      if (tokens.length !== B) throw new Error(`decode: ${tokens.length} tokens for ${B} active rows`);
      ensureCapacity(B, Math.max(...rows.map((r) => r.length + 1)));
      const C = capacity;
      const S = C + 1;
      const bias = new Float32Array(B * S).fill(MASKED); // [B, 1, 1, 1, S]: cached positions < length, then the new token
      const positions = new BigInt64Array(B); // [B, 1]
      rows.forEach((r, b) => {
        const from = window === null ? 0 : Math.max(0, r.length + 1 - window);
        bias.fill(0, b * S + from, b * S + r.length);
        bias[b * S + C] = 0;
        positions[b] = BigInt(r.length);
      });
      const n = B * rowFloats();
      const feeds: Record<string, ort.Tensor> = {
        [GEN.inputIds]: new ort.Tensor('int32', Int32Array.from(tokens), [B, 1]),
        [GEN.positionIds]: new ort.Tensor('int64', positions, [B, 1]),
        [GEN.attentionBias]: new ort.Tensor('float32', bias, [B, 1, 1, 1, S]),
        [GEN.logitRows]: new ort.Tensor('int64', BigInt64Array.from(rows, (_, b) => BigInt(b)), [B]),
        ...adapterFeeds(rows.map((r) => r.adapter)),
      };
      for (let l = 0; l < L; l++) {
        feeds[GEN.pastKey(l)] = new ort.Tensor('float32', keys[l].subarray(0, n), [B, NKV, C, HD]);
        feeds[GEN.pastValue(l)] = new ort.Tensor('float32', values[l].subarray(0, n), [B, NKV, C, HD]);
      }
      const out = await session.run(feeds);
      for (let l = 0; l < L; l++) {
        for (const [present, buffer] of [[out[GEN.presentKey(l)], keys[l]], [out[GEN.presentValue(l)], values[l]]] as const) {
          const src = present.data as Float32Array; // [B, NKV, 1, HD]
          rows.forEach((r, b) => {
            for (let h = 0; h < NKV; h++) buffer.set(src.subarray((b * NKV + h) * HD, (b * NKV + h + 1) * HD), ((r.slot * NKV + h) * C + r.length) * HD);
          });
        }
      }
      for (const r of rows) r.length++;
      const logits = out[GEN.logits].data as Float32Array; // [B, V]
      return rows.map((_, b) => logits.subarray(b * V, (b + 1) * V));
    },

    release(row) {
      const from = removeRow(rows, row);
      if (from !== null) {
        const size = rowFloats();
        for (let l = 0; l < L; l++) {
          keys[l].copyWithin(row.slot * size, from * size, (from + 1) * size);
          values[l].copyWithin(row.slot * size, from * size, (from + 1) * size);
        }
      }
      if (rows.length === 0 && capacity > CAPACITY_BUCKETS[0]) {
        // An idle model gives back long-context buffers.
        capacity = 0;
        allocatedRows = 0;
        keys = [];
        values = [];
      }
    },

    close: () => session.close(),
  };
}
