// The generation graph: the training forward (decoderStack) with a JS-owned KV cache in, the new K/V slice and the logits of chosen positions out, and per-row LoRA adapters as inputs.
import { Graph, type FloatDType } from '../onnx/graph.ts';
import * as op from '../onnx/ops.ts';
import type { ModelConfig } from '../models/config.ts';
import { decoderStack, dynamicRopeTables, finalNorm, lmHead, perRowLoraHook, type KvCache } from '../models/llama.ts';
import { LORA_TARGETS, projectionDims, type LoraTarget } from '../models/parameters.ts';
import type { WeightFactory } from '../models/weight-source.ts';

// Dims (symbolic in the graph): B batch rows, T new positions per row, P cache capacity (past slots), S = P + T,
// R_m the batch's largest LoRA rank on target m (0 when no row adapts m), N = B·T, K positions whose logits are wanted;
// D hidden, V vocab, NKV, HD.

/** Input and output names of the generation graph, shared with the runner that feeds it. */
export const GEN = {
  inputIds: 'input_ids', // [B, T] int32
  positionIds: 'position_ids', // [B, T] int64
  attentionBias: 'attention_bias', // [B, 1, 1, T, S]: 0 visible, −1e9 hidden
  logitRows: 'logit_rows', // [K] int64: flat rows b·T + t whose logits are wanted (each row's last real token; every prompt position when scoring)
  pastKey: (l: number) => `past_key.${l}`, // [B, NKV, P, HD]
  pastValue: (l: number) => `past_value.${l}`, // [B, NKV, P, HD]
  loraA: (l: number, t: LoraTarget) => `lora_a.${l}.${t}`, // [B, in, R_t]
  loraB: (l: number, t: LoraTarget) => `lora_b.${l}.${t}`, // [B, R_t, out], alpha/r folded in
  logits: 'logits', // [K, V]
  presentKey: (l: number) => `present_key.${l}`, // [B, NKV, T, HD]
  presentValue: (l: number) => `present_value.${l}`, // [B, NKV, T, HD]
};

/**
 * Builds the one generation graph of a base model: every projection of every layer takes a per-row adapter
 * (A [B, in, R_t], B [B, R_t, out]); a row on the bare base model, or whose adapter skips a module, gets zeros,
 * and a module no row adapts gets rank 0 (empty MatMuls: exact zeros). Prefill and decode use the same graph.
 */
export function buildGenerationGraph(config: ModelConfig, weights: WeightFactory, dtype: FloatDType = 'float32'): Graph {
  const g = new Graph('localtune-generate', dtype);
  const weight = weights(g);
  const { numKvHeads: NKV, headDim: HD } = config;
  const ids = g.input(GEN.inputIds, 'int32', ['batch', 'seq']); // [B, T]
  const positions = g.input(GEN.positionIds, 'int64', ['batch', 'seq']); // [B, T]
  const bias = g.input(GEN.attentionBias, dtype, ['batch', 1, 1, 'seq', 'keys']); // [B, 1, 1, T, S]
  const logitRows = g.input(GEN.logitRows, 'int64', ['logit_rows']); // [K]
  const past = Array.from({ length: config.numLayers }, (_, l) => ({
    key: g.input(GEN.pastKey(l), dtype, ['batch', NKV, 'past', HD]), // [B, NKV, P, HD]
    value: g.input(GEN.pastValue(l), dtype, ['batch', NKV, 'past', HD]), // [B, NKV, P, HD]
  }));
  const kv: KvCache = {
    past: (l) => past[l],
    present(l, key, value) {
      g.output(key, GEN.presentKey(l)); // [B, NKV, T, HD]
      g.output(value, GEN.presentValue(l)); // [B, NKV, T, HD]
    },
  };
  // Every projection takes a per-row adapter: A [B, in, R_t], B [B, R_t, out] (alpha/r folded into B).
  const linear = perRowLoraHook(ids, (layer, target) => {
    const { in: fin, out } = projectionDims(config, target);
    return {
      a: g.input(GEN.loraA(layer, target), dtype, ['batch', fin, `rank_${target}`]),
      b: g.input(GEN.loraB(layer, target), dtype, ['batch', `rank_${target}`, out]),
    };
  });
  const x = decoderStack(config, weight, { inputIds: ids, attentionBias: bias, rope: dynamicRopeTables(config, positions), kv, linear }); // [N, D]
  const picked = finalNorm(config, weight, op.gather(x, logitRows, 0)); // [K, D]
  g.output(lmHead(config, weight, picked), GEN.logits); // [K, V]
  return g;
}

/** Every (layer, target) adapter input pair, in a fixed order. */
export function adapterSlots(config: ModelConfig): { layer: number; target: LoraTarget; in: number; out: number }[] {
  const slots = [];
  for (let layer = 0; layer < config.numLayers; layer++) for (const target of LORA_TARGETS) slots.push({ layer, target, ...projectionDims(config, target) });
  return slots;
}
