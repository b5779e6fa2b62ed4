// Folding a LoRA adapter into base weights: W' = W + (alpha/r)·B·A, the matrix the adapted projection computes with.
import type { Tensor } from '../models/safetensors.ts';
import { loraScaling, type LoraConfig } from './config.ts';
import type { AdapterTensors } from './init.ts';
import { loraModules } from '../models/parameters.ts';
import type { ModelConfig } from '../models/config.ts';

// Dimension letters: O out features, I in features, R rank.

/** W [O, I] += scale·B [O, R]·A [R, I], in place; row by row so only one row of W is touched at a time. */
export function addLoraProduct(weight: Tensor, a: Tensor, b: Tensor, scale: number): void {
  const [O, I] = weight.dims;
  const R = a.dims[0];
  if (a.dims[1] !== I || b.dims[0] !== O || b.dims[1] !== R) throw new Error(`LoRA merge: W [${weight.dims}], A [${a.dims}], B [${b.dims}] do not fit W + B·A`);
  const w = weight.data;
  const ad = a.data;
  const bd = b.data;
  for (let o = 0; o < O; o++) {
    const row = o * I;
    for (let k = 0; k < R; k++) {
      const c = scale * bd[o * R + k];
      if (c === 0) continue;
      const ak = k * I;
      for (let i = 0; i < I; i++) w[row + i] += c * ad[ak + i];
    }
  }
}

/** The adapter's A/B pair for each adapted base weight name (`model.layers.N.self_attn.q_proj.weight`). */
export function loraPairsByWeight(modelConfig: ModelConfig, lora: LoraConfig, tensors: AdapterTensors): Map<string, { a: Tensor; b: Tensor }> {
  const pairs = new Map<string, { a: Tensor; b: Tensor }>();
  for (const m of loraModules(modelConfig, lora.targetModules)) {
    const a = tensors.get(m.loraA);
    const b = tensors.get(m.loraB);
    if (!a || !b) throw new Error(`LoRA merge: adapter lacks ${a ? m.loraB : m.loraA}`);
    pairs.set(m.baseWeight, { a, b });
  }
  return pairs;
}

/** Folds the adapter into `weight` in place when `name` is an adapted projection; other weights are left as they are. */
export function foldAdapterInto(name: string, weight: Tensor, pairs: ReadonlyMap<string, { a: Tensor; b: Tensor }>, lora: LoraConfig): void {
  const pair = pairs.get(name);
  if (pair) addLoraProduct(weight, pair.a, pair.b, loraScaling(lora));
}
