// The `lora` extension field of a job (snake_case on the wire) ↔ the engine's LoraConfig, defaults filled in.
import { resolveLoraConfig, type LoraConfig } from '../engine/lora/config.ts';
import type { LoraTarget } from '../engine/models/parameters.ts';

export interface LoraSettings {
  r?: number;
  alpha?: number;
  dropout?: number;
  target_modules?: LoraTarget[];
}

/** A request's settings with the defaults for what it leaves out; throws an Error naming the bad field. */
export function loraFromRequest(settings: LoraSettings = {}): LoraConfig {
  const { target_modules, ...rest } = settings;
  return resolveLoraConfig({ ...rest, ...(target_modules ? { targetModules: target_modules } : {}) });
}

/** What a job object shows: the settings it trains with. */
export function loraToWire(c: LoraConfig): Required<LoraSettings> {
  return { r: c.r, alpha: c.alpha, dropout: c.dropout, target_modules: c.targetModules };
}
