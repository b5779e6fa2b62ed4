// LoRA hyperparameters (rank, alpha, dropout, target modules): defaults and validation.
import { LORA_TARGETS, isLoraTarget, type LoraTarget } from '../models/parameters.ts';

export interface LoraConfig {
  r: number; // rank R
  alpha: number; // the update is scaled by alpha / r
  dropout: number; // on the LoRA branch's input, training only
  targetModules: LoraTarget[]; // in LORA_TARGETS order
}

export const DEFAULT_LORA_CONFIG: Readonly<LoraConfig> = { r: 16, alpha: 32, dropout: 0.05, targetModules: [...LORA_TARGETS] };

/** Fills defaults and checks every field; throws an Error naming the field. Target modules come back in LORA_TARGETS order. */
export function resolveLoraConfig(partial: Partial<LoraConfig> = {}): LoraConfig {
  const c = { ...DEFAULT_LORA_CONFIG, ...partial };
  if (!Number.isInteger(c.r) || c.r < 1 || c.r > 1024) throw new Error(`LoRA r must be an integer from 1 to 1024, got ${c.r}`);
  if (!Number.isFinite(c.alpha) || c.alpha <= 0) throw new Error(`LoRA alpha must be a positive number, got ${c.alpha}`);
  if (!Number.isFinite(c.dropout) || c.dropout < 0 || c.dropout >= 1) throw new Error(`LoRA dropout must be in [0, 1), got ${c.dropout}`);
  if (!Array.isArray(c.targetModules) || c.targetModules.length === 0) throw new Error('LoRA targetModules must name at least one module');
  for (const t of c.targetModules) {
    if (!isLoraTarget(t)) throw new Error(`LoRA target module ${JSON.stringify(t)} is not one of ${LORA_TARGETS.join(', ')}`);
  }
  if (new Set(c.targetModules).size !== c.targetModules.length) throw new Error(`LoRA targetModules has duplicates: ${c.targetModules.join(', ')}`);
  return { r: c.r, alpha: c.alpha, dropout: c.dropout, targetModules: LORA_TARGETS.filter((t) => c.targetModules.includes(t)) };
}

/** The factor on the LoRA branch: h = x·Wᵀ + (alpha / r)·x·Aᵀ·Bᵀ. */
export function loraScaling(config: LoraConfig): number {
  return config.alpha / config.r;
}
