// The one table of a Llama-family model's parameter names and shapes, and of its LoRA target modules (PEFT names).
// Shared by weight loading, the forward, LoRA init, checkpoints and PEFT export: no other file spells these names.
import type { ModelConfig } from './config.ts';

// Dimension letters: D hidden, F intermediate, V vocab, NH heads, NKV kv heads, HD head dim, R LoRA rank.

export interface ParameterSpec {
  name: string;
  dims: number[]; // HF layout: Linear weights are [out, in]
}

export const EMBED_TOKENS = 'model.embed_tokens.weight'; // [V, D]
export const FINAL_NORM = 'model.norm.weight'; // [D]
export const LM_HEAD = 'lm_head.weight'; // [V, D], absent when tied

/** The projections LoRA can adapt, in PEFT's target_modules spelling. */
export type LoraTarget = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';
export const LORA_TARGETS: readonly LoraTarget[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export function isLoraTarget(name: string): name is LoraTarget {
  return (LORA_TARGETS as readonly string[]).includes(name);
}

/** The submodule a projection lives in: attention projections under self_attn, the rest under mlp. */
export function projectionModule(target: LoraTarget): 'self_attn' | 'mlp' {
  return target === 'gate_proj' || target === 'up_proj' || target === 'down_proj' ? 'mlp' : 'self_attn';
}

/** `model.layers.{i}.self_attn.q_proj` etc. (no `.weight`). */
export function projectionPath(layer: number, target: LoraTarget): string {
  return `model.layers.${layer}.${projectionModule(target)}.${target}`;
}

/** in/out features of one projection (the same in every layer). */
export function projectionDims(config: ModelConfig, target: LoraTarget): { in: number; out: number } {
  const D = config.hiddenSize;
  const F = config.intermediateSize;
  const q = config.numHeads * config.headDim; // NH*HD
  const kv = config.numKvHeads * config.headDim; // NKV*HD
  switch (target) {
    case 'q_proj':
      return { in: D, out: q };
    case 'k_proj':
    case 'v_proj':
      return { in: D, out: kv };
    case 'o_proj':
      return { in: q, out: D };
    case 'gate_proj':
    case 'up_proj':
      return { in: D, out: F };
    case 'down_proj':
      return { in: F, out: D };
  }
}

/** Whether a projection has a bias in this model: q/k/v when attentionBias, o when attentionOutputBias, MLP never. */
export function projectionHasBias(config: ModelConfig, target: LoraTarget): boolean {
  if (target === 'o_proj') return config.attentionOutputBias;
  return config.attentionBias && (target === 'q_proj' || target === 'k_proj' || target === 'v_proj');
}

/** Names of one decoder layer's parameters, by role, for the forward. Bias names are null when absent. */
export interface LayerParameterNames {
  inputNorm: string; // [D]
  postAttentionNorm: string; // [D]
  weight: Record<LoraTarget, string>; // [out, in]
  bias: Record<LoraTarget, string | null>; // [out]
}

export function layerParameterNames(config: ModelConfig, layer: number): LayerParameterNames {
  const weight = {} as Record<LoraTarget, string>;
  const bias = {} as Record<LoraTarget, string | null>;
  for (const t of LORA_TARGETS) {
    weight[t] = `${projectionPath(layer, t)}.weight`;
    bias[t] = projectionHasBias(config, t) ? `${projectionPath(layer, t)}.bias` : null;
  }
  return {
    inputNorm: `model.layers.${layer}.input_layernorm.weight`,
    postAttentionNorm: `model.layers.${layer}.post_attention_layernorm.weight`,
    weight,
    bias,
  };
}

/** The LM head's weight name: the embedding itself when tied. */
export function lmHeadName(config: ModelConfig): string {
  return config.tieWordEmbeddings ? EMBED_TOKENS : LM_HEAD;
}

/** Every base-model parameter, in a fixed order (embedding, layers 0..L-1, final norm, head). */
export function baseParameters(config: ModelConfig): ParameterSpec[] {
  const D = config.hiddenSize;
  const specs: ParameterSpec[] = [{ name: EMBED_TOKENS, dims: [config.vocabSize, D] }];
  for (let i = 0; i < config.numLayers; i++) {
    const names = layerParameterNames(config, i);
    specs.push({ name: names.inputNorm, dims: [D] });
    for (const t of LORA_TARGETS) {
      const { in: fin, out } = projectionDims(config, t);
      specs.push({ name: names.weight[t], dims: [out, fin] });
      const b = names.bias[t];
      if (b) specs.push({ name: b, dims: [out] });
    }
    specs.push({ name: names.postAttentionNorm, dims: [D] });
  }
  specs.push({ name: FINAL_NORM, dims: [D] });
  if (!config.tieWordEmbeddings) specs.push({ name: LM_HEAD, dims: [config.vocabSize, D] });
  return specs;
}

export function parameterCount(specs: readonly ParameterSpec[]): number {
  return specs.reduce((n, s) => n + s.dims.reduce((a, b) => a * b, 1), 0);
}

/** PEFT's prefix: PeftModel wraps the CausalLM (`base_model.model.`), which holds `model.layers…`. */
export const PEFT_PREFIX = 'base_model.model.';

/** One LoRA-adapted projection: where it is, its dims, and its PEFT tensor names. */
export interface LoraModuleSpec {
  layer: number;
  target: LoraTarget;
  in: number;
  out: number;
  baseWeight: string; // model.layers.{i}.self_attn.q_proj.weight [out, in]
  loraA: string; // base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight [R, in]
  loraB: string; // base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight [out, R]
}

export function loraTensorNames(layer: number, target: LoraTarget): { loraA: string; loraB: string } {
  const p = PEFT_PREFIX + projectionPath(layer, target);
  return { loraA: `${p}.lora_A.weight`, loraB: `${p}.lora_B.weight` };
}

/** Adapted modules in a fixed order: layer by layer, targets in LORA_TARGETS order. */
export function loraModules(config: ModelConfig, targets: readonly LoraTarget[]): LoraModuleSpec[] {
  const ordered = LORA_TARGETS.filter((t) => targets.includes(t));
  const modules: LoraModuleSpec[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const target of ordered) {
      const { in: fin, out } = projectionDims(config, target);
      modules.push({ layer, target, in: fin, out, baseWeight: `${projectionPath(layer, target)}.weight`, ...loraTensorNames(layer, target) });
    }
  }
  return modules;
}

/** Shapes of every LoRA tensor at rank r: A [R, in], B [out, R]. */
export function loraParameters(config: ModelConfig, targets: readonly LoraTarget[], r: number): ParameterSpec[] {
  return loraModules(config, targets).flatMap((m) => [
    { name: m.loraA, dims: [r, m.in] },
    { name: m.loraB, dims: [m.out, r] },
  ]);
}

/**
 * Reads a LoRA tensor name as PEFT, vLLM and older tools write it: with or without the
 * `base_model.model.` prefix, with or without `.weight`, with an adapter name (`lora_A.default.weight`).
 * Returns null for names that are not LoRA A/B tensors of a Llama-family projection.
 */
export function parseLoraTensorName(name: string): { layer: number; target: LoraTarget; matrix: 'A' | 'B' } | null {
  const m = /(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)(\.[A-Za-z0-9_-]+)?(\.weight)?$/.exec(name);
  if (!m) return null;
  const target = m[3];
  if (!isLoraTarget(target) || projectionModule(target) !== m[2]) return null;
  return { layer: Number(m[1]), target, matrix: m[4] as 'A' | 'B' };
}
