// A fresh LoRA adapter: A Kaiming-uniform from a seed (as PEFT initialises it), B zero, so step 0 equals the base model.
import type { ModelConfig } from '../models/config.ts';
import { loraModules } from '../models/parameters.ts';
import type { Tensor } from '../models/safetensors.ts';
import { createRng, fillUniform } from '../random.ts';
import type { LoraConfig } from './config.ts';

/** LoRA tensors by PEFT name: `…q_proj.lora_A.weight` [R, in], `…q_proj.lora_B.weight` [out, R]. */
export type AdapterTensors = Map<string, Tensor>;

/**
 * PEFT calls kaiming_uniform_(A, a=√5): gain = √(2 / (1 + a²)) = √(1/3), bound = gain·√(3 / fan_in) = 1/√in.
 * Tensors are drawn in loraModules order from one seeded stream, so the same seed gives the same adapter.
 */
export function initAdapter(modelConfig: ModelConfig, loraConfig: LoraConfig, seed: number): AdapterTensors {
  const rng = createRng(seed);
  const R = loraConfig.r;
  const tensors: AdapterTensors = new Map();
  for (const m of loraModules(modelConfig, loraConfig.targetModules)) {
    const bound = 1 / Math.sqrt(m.in);
    tensors.set(m.loraA, { dims: [R, m.in], data: fillUniform(rng, new Float32Array(R * m.in), -bound, bound) }); // [R, in]
    tensors.set(m.loraB, { dims: [m.out, R], data: new Float32Array(m.out * R) }); // [out, R]
  }
  return tensors;
}
