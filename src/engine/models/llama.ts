// The Llama-family forward (Llama, Mistral, Qwen2, SmolLM), written once over the graph builder for training, eval and generation.
import type { Tensor } from '../onnx/graph.ts';
import { attention, lmHeadCrossEntropy, rmsNorm, rotary, swiGlu } from '../onnx/fused.ts';
import * as op from '../onnx/ops.ts';
import type { ModelConfig } from './config.ts';
import { HEAD_ROW_BLOCK, type WeightSource } from './weight-source.ts';
import { EMBED_TOKENS, FINAL_NORM, layerParameterNames, lmHeadName, type LoraTarget } from './parameters.ts';

// Dims: B batch rows, T new positions, P past positions, S = P + T keys, N = B·T rows of the hidden state,
// D hidden, F MLP width, V vocab, NH query heads, NKV kv heads, G = NH/NKV, HD head dim.


/**
 * The LoRA hook: a projection's low-rank update for input x, plus `addend` (the residual of o_proj and down_proj, else
 * null), or null when the projection has no adapter. What it returns becomes the base Gemm's C (no separate Add, in
 * training or in serving's per-row path). Training passes `(alpha/r)·dropout(x)·Aᵀ·Bᵀ` (loraGraphInputs in
 * train/graphs.ts); serving passes per-row adapters (perRowLoraHook). Absent: the base model.
 */
export type LinearHook = (layer: number, target: LoraTarget, x: Tensor /* [N, in] */, addend: Tensor | null /* [N, out] */) => Tensor | null;

/**
 * Serving's LoRA hook: batch row b uses its own adapter, update[b] = x[b]·A[b]·B[b], with
 * A [B, in, R] and B [B, R, out] graph inputs (alpha/r folded into B when loading; all-zero rows
 * give the base model; ranks padded with zeros to the batch's largest). `adapter` returns null for
 * projections without LoRA.
 */
export function perRowLoraHook(inputIds: Tensor, adapter: (layer: number, target: LoraTarget) => { a: Tensor; b: Tensor } | null): LinearHook {
  return (layer, target, x, addend) => {
    const ab = adapter(layer, target);
    if (!ab) return null;
    const x3 = op.reshape(x, [[inputIds, 0], [inputIds, 1], x.shape[1] as number]); // [B, T, in]
    const update = op.reshape(op.matmul(op.matmul(x3, ab.a), ab.b), [-1, ab.b.shape[2] as number]); // [N, out]
    return addend ? op.add(addend, update) : update;
  };
}

/** RoPE tables [B, T, HD/2] (see rotary()); the q tables carry 1/√HD (the attention scale). */
export interface RopeTables {
  cosQ: Tensor;
  sinQ: Tensor;
  cosK: Tensor;
  sinK: Tensor;
}

/**
 * Key/value cache for generation. `past(l)` gives layer l's cached keys/values [B, NKV, P, HD]
 * (fixed-capacity buffers owned by the caller); `present(l, k, v)` receives this call's new slice
 * [B, NKV, T, HD] (make those graph outputs, never the whole cache).
 */
export interface KvCache {
  past(layer: number): { key: Tensor; value: Tensor };
  present(layer: number, key: Tensor, value: Tensor): void;
}

export interface ForwardInputs {
  inputIds: Tensor; // [B, T] int64
  /** Additive attention bias [B, 1, 1, T, S]: 0 where query t may attend key s, −1e9 elsewhere (see attentionBias()). */
  attentionBias: Tensor;
  rope: RopeTables;
  kv?: KvCache;
  linear?: LinearHook;
  /**
   * Causal attention in query blocks of this many positions (static shapes, no cache): block i only
   * multiplies against keys 0..(i+1)·block, skipping most of the masked upper triangle. Default 256
   * (measured: 1×1024 steps ~40 % faster than full T×T, where 128 gained less); 0 or T ≤ block: full scores.
   */
  attentionBlock?: number;
}

/** HF's inverse frequencies [HD/2] with linear or llama3 scaling, in float32 arithmetic as HF computes them. */
export function ropeInverseFrequencies(config: ModelConfig): Float64Array {
  const half = config.headDim / 2;
  const f = Math.fround;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(config.ropeTheta, f((2 * i) / config.headDim))));
  const s = config.ropeScaling;
  if (s?.type === 'linear') for (let i = 0; i < half; i++) inv[i] = f(inv[i] / s.factor);
  if (s?.type === 'llama3') {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] = f(inv[i] / s.factor);
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = f((1 - smooth) * (inv[i] / s.factor) + smooth * inv[i]);
      }
    }
  }
  return inv;
}

/** Constant RoPE tables for B rows at positions 0..T−1 (training and eval: right-padded rows start at 0). Shape [B, T, HD/2]. */
export function staticRopeTables(g: Tensor['graph'], config: ModelConfig, B: number, T: number): RopeTables {
  const inv = ropeInverseFrequencies(config);
  const half = config.headDim / 2;
  const cos = new Float64Array(B * T * half);
  const sin = new Float64Array(B * T * half);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(t * inv[j]); // float32, as HF computes it
      for (let b = 0; b < B; b++) {
        cos[(b * T + t) * half + j] = Math.cos(angle);
        sin[(b * T + t) * half + j] = Math.sin(angle);
      }
    }
  const s = 1 / Math.sqrt(config.headDim);
  const shape = [B, T, half];
  return {
    cosQ: g.constant(cos.map((v) => v * s), g.float, shape),
    sinQ: g.constant(sin.map((v) => v * s), g.float, shape),
    cosK: g.constant(cos, g.float, shape),
    sinK: g.constant(sin, g.float, shape),
  };
}

/** RoPE tables from per-row position ids [B, T] int64, computed in the graph (generation). Shape [B, T, HD/2]. */
export function dynamicRopeTables(config: ModelConfig, positionIds: Tensor): RopeTables {
  const g = positionIds.graph;
  const inv = g.constant(Array.from(ropeInverseFrequencies(config)), g.float, [config.headDim / 2]); // [HD/2]
  const exact = op.mul(op.unsqueeze(op.cast(positionIds, g.float), [2]), inv); // [B, T, HD/2]
  // HF rounds the angle to float32 (as staticRopeTables does); a float64 graph must too, or it drifts from training's tables.
  const angles = g.float === 'float32' ? exact : op.cast(op.cast(exact, 'float32'), g.float);
  const cos = g.emit('Cos', [angles], {}, [[g.float, angles.shape]])[0]; // [B, T, HD/2]
  const sin = g.emit('Sin', [angles], {}, [[g.float, angles.shape]])[0]; // [B, T, HD/2]
  const s = 1 / Math.sqrt(config.headDim);
  return { cosQ: op.scale(cos, s), sinQ: op.scale(sin, s), cosK: cos, sinK: sin };
}

/**
 * The decoder stack: embeddings and every layer. Returns the residual stream after the last
 * layer [N, D], before the final norm (so callers can select rows first; see finalNorm()).
 */
export function decoderStack(config: ModelConfig, weight: WeightSource, inputs: ForwardInputs): Tensor {
  const { inputIds: ids, attentionBias: bias, rope: tables, kv } = inputs;
  const HD = config.headDim;
  const NH = config.numHeads;
  const NKV = config.numKvHeads;
  const G = NH / NKV;
  const dimB: [Tensor, number] = [ids, 0];
  const dimT: [Tensor, number] = [ids, 1];
  const dimS: [Tensor, number] = [bias, 4];

  // x·Wᵀ + (LoRA update) + residual + bias: update+residual, else the residual, else the bias is the Gemm's C;
  // a bias joins the others with an Add.
  const linear = (layer: number, target: LoraTarget, x: Tensor, residual: Tensor | null = null): Tensor => {
    const names = layerParameterNames(config, layer);
    const b = names.bias[target];
    const c = inputs.linear?.(layer, target, x, residual) ?? residual; // [N, out] or null
    return weight.linear(names.weight[target], x, b ? (c ? op.add(c, weight(b)) : weight(b)) : c); // [N, out]
  };

  // The bias adds to the scores viewed as [B, NKV·G, Q, S] as [B, 1, Q, S], broadcast over the heads (one middle
  // dim: measured faster than adding a copy expanded per head, and no such copy in memory); with query blocks,
  // each block's part is cut once for all layers.
  const perRow = (t: Tensor) => op.reshape(t, [[t, 0], 1, [t, 3], [t, 4]]); // [B, 1, 1, Q, S] → [B, 1, Q, S]
  const staticBias = bias.shape.every((d) => typeof d === 'number');
  const block = inputs.attentionBlock ?? 256;
  const T0 = ids.shape[1];
  const blocks =
    !kv && staticBias && block > 0 && typeof T0 === 'number' && T0 > block && T0 % block === 0
      ? Array.from({ length: T0 / block }, (_, i) => perRow(op.slice(bias, [i * block, 0], [(i + 1) * block, (i + 1) * block], [3, 4]))) // [B, 1, b, S_i] each
      : null;
  const rowBias = perRow(bias); // [B, 1, T, S]
  let x = weight.rows(EMBED_TOKENS, ids); // [N, D]
  for (let l = 0; l < config.numLayers; l++) {
    const names = layerParameterNames(config, l);
    // Attention block.
    const h = rmsNorm(x, weight(names.inputNorm), config.rmsNormEps); // [N, D]
    const q = op.reshape(linear(l, 'q_proj', h), [dimB, dimT, NH * HD]); // [B, T, NH·HD]
    const k = op.reshape(linear(l, 'k_proj', h), [dimB, dimT, NKV * HD]); // [B, T, NKV·HD]
    const v = op.reshape(linear(l, 'v_proj', h), [dimB, dimT, NKV, HD]); // [B, T, NKV, HD]
    const qr = op.reshape(rotary(q, tables.cosQ, tables.sinQ, NH), [dimB, dimT, NH, HD]); // [B, T, NH, HD], scaled by 1/√HD
    const kr = op.reshape(rotary(k, tables.cosK, tables.sinK, NKV), [dimB, dimT, NKV, HD]); // [B, T, NKV, HD]
    const q5 = op.transpose(op.reshape(qr, [dimB, dimT, NKV, G, HD]), [0, 2, 3, 1, 4]); // [B, NKV, G, T, HD]
    let vh = op.transpose(v, [0, 2, 1, 3]); // [B, NKV, T, HD]
    let ctx: Tensor; // [B, NKV, G, T, HD]
    if (kv) {
      const kh = op.transpose(kr, [0, 2, 1, 3]); // [B, NKV, T, HD]
      kv.present(l, kh, vh);
      const past = kv.past(l);
      const kt = op.transpose(op.concat([past.key, kh], 2), [0, 1, 3, 2]); // [B, NKV, HD, S]
      vh = op.concat([past.value, vh], 2); // [B, NKV, S, HD]
      ctx = attend(op.reshape(q5, [dimB, NKV, -1, HD]), kt, vh, rowBias, [dimB, NKV, G, dimT, dimS]);
    } else {
      const kt = op.transpose(kr, [0, 2, 3, 1]); // [B, NKV, HD, T]: one transpose instead of two
      if (!blocks) ctx = attend(op.reshape(q5, [dimB, NKV, -1, HD]), kt, vh, rowBias, [dimB, NKV, G, dimT, dimS]);
      else {
        const [B, T] = ids.shape as number[];
        const queries = op.split(q5, blocks.map(() => block), 3); // [B, NKV, G, b, HD] each (one Split: its gradient is one Concat)
        const parts = blocks.map((blockBias, i) => {
          const keys = (i + 1) * block; // S_i: keys up to the block's last query
          const qi = op.reshape(queries[i], [B, NKV, G * block, HD]); // [B, NKV, G·b, HD]
          const ki = keys === T ? kt : op.slice(kt, [0], [keys], [3]); // [B, NKV, HD, S_i]
          const vi = keys === T ? vh : op.slice(vh, [0], [keys], [2]); // [B, NKV, S_i, HD]
          return attend(qi, ki, vi, blockBias, [B, NKV, G, block, keys]); // [B, NKV, G, b, HD]
        });
        ctx = op.concat(parts, 3); // [B, NKV, G, T, HD]
        if (ctx.shape[3] !== T) throw new Error(`blocked attention covered ${ctx.shape[3]} of ${T} positions`);
      }
    }
    const merged = op.reshape(op.transpose(ctx, [0, 3, 1, 2, 4]), [-1, NH * HD]); // [N, NH·HD]
    x = linear(l, 'o_proj', merged, x); // [N, D]  x + attention
    // MLP block.
    const h2 = rmsNorm(x, weight(names.postAttentionNorm), config.rmsNormEps); // [N, D]
    const act = swiGlu(linear(l, 'gate_proj', h2), linear(l, 'up_proj', h2)); // [N, F]
    x = linear(l, 'down_proj', act, x); // [N, D]  x + MLP
  }
  return x; // [N, D]
}

/**
 * softmax(q·kᵀ + bias)·v for queries folded as [B, NKV, G·Q, HD] against keys kᵀ [B, NKV, HD, S] and
 * values [B, NKV, S, HD], with the bias [B, 1, Q, S] of each row; `split` = [B, NKV, G, Q, S] names the dims.
 * Returns [B, NKV, G, Q, HD]. (1/√HD is already in q through its RoPE tables.)
 */
function attend(q: Tensor, kt: Tensor, v: Tensor, bias: Tensor, split: (number | [Tensor, number])[]): Tensor {
  const [dimB, NKV, G, dimQ, dimS] = split;
  const heads = (NKV as number) * (G as number);
  return op.reshape(attention(q, kt, v, bias, [dimB, heads, dimQ, dimS]), [dimB, NKV, G, dimQ, v.shape[3] as number]); // [B, NKV, G, Q, HD]
}

/** The final RMSNorm on any rows of the residual stream: [M, D] → [M, D]. */
export function finalNorm(config: ModelConfig, weight: WeightSource, x: Tensor): Tensor {
  return rmsNorm(x, weight(FINAL_NORM), config.rmsNormEps); // [M, D]
}

/** Logits of normed rows: [M, D] → [M, V] (tied heads read the embedding; a quantized head's kernel scratch bounded to blocks of rows). */
export function lmHead(config: ModelConfig, weight: WeightSource, h: Tensor): Tensor {
  return weight.linear(lmHeadName(config), h, null, HEAD_ROW_BLOCK); // [M, V]
}

/** Per row of normed rows h [M, D] against labels [M] int64 and weights [M], chunked: w·ce [M] and w·[argmax = label] [M]. */
export function lmHeadLoss(config: ModelConfig, weight: WeightSource, h: Tensor, labels: Tensor, weights: Tensor, chunk = 256) {
  // A quantized head is dequantized once for all chunks (both of each chunk's products read it), once h exists, in
  // blocks of rows: the dequantization's intermediates (codes as floats, then int32, levels) then exist for one block at
  // a time, not for the whole head (measured on the 1B shape: 9.6 GB step peak whole).
  return lmHeadCrossEntropy(h, weight.matrixBlocks(lmHeadName(config), h, HEAD_ROW_BLOCK), labels, weights, chunk);
}

export const MASKED = -1e9;

/**
 * The additive attention bias [B, 1, 1, T, S] for B rows of T new tokens after P cached ones:
 * key s is visible to query t when it is a real token (keyMask[b, s] = 1), not in the future
 * (s ≤ P + t) and, with a sliding window, not older than `window`. Every query always sees its own
 * position so padded rows never softmax over nothing (no NaN).
 */
export function attentionBias(rows: number, T: number, keyMask: ArrayLike<number> /* [B, S] */, P = 0, window: number | null = null): Float32Array {
  const S = P + T;
  const out = new Float32Array(rows * T * S);
  for (let b = 0; b < rows; b++)
    for (let t = 0; t < T; t++)
      for (let s = 0; s < S; s++) {
        const self = s === P + t;
        const visible = s <= P + t && keyMask[b * S + s] !== 0 && (window === null || P + t - s < window);
        out[(b * T + t) * S + s] = self || visible ? 0 : MASKED;
      }
  return out;
}
