// A trainer's full state on disk (adapter, AdamW moments and step) in one safetensors file, replaced atomically, restored bit for bit.
import { readSafetensorsHeader, readTensor, writeSafetensors, type TensorToWrite } from '../models/safetensors.ts';
import type { AdapterTensors } from '../lora/init.ts';
import type { OptimizerState } from './trainer.ts';

export interface TrainerState {
  adapter: AdapterTensors;
  optimizer: OptimizerState;
}

// Tensor names in the file: the PEFT name behind a prefix saying which of the three it is.
const PREFIX = { adapter: 'adapter/', m: 'adam_m/', v: 'adam_v/' } as const;
const STEP_KEY = 'adam_step';

/**
 * Writes `state` (F32, so it reads back exactly) with `metadata` (string values) into `file`, atomically:
 * a reader sees the previous state or this one, never a mix.
 */
export function writeTrainerState(file: string, state: TrainerState, metadata: Record<string, string> = {}): void {
  if (STEP_KEY in metadata) throw new Error(`writeTrainerState: metadata key ${STEP_KEY} is reserved`);
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, t] of state.adapter) tensors.set(PREFIX.adapter + name, t);
  for (const [name, t] of state.optimizer.m) tensors.set(PREFIX.m + name, t);
  for (const [name, t] of state.optimizer.v) tensors.set(PREFIX.v + name, t);
  writeSafetensors(file, tensors, { ...metadata, [STEP_KEY]: String(state.optimizer.step) });
}

/** Reads a file written by writeTrainerState; throws naming the file when it is not one. */
export function readTrainerState(file: string): { state: TrainerState; metadata: Record<string, string> } {
  const { tensors, metadata } = readSafetensorsHeader(file);
  const step = Number(metadata[STEP_KEY]);
  if (!Number.isInteger(step) || step < 0) throw new Error(`${file}: no AdamW step in its metadata (not a trainer state file)`);
  const adapter: AdapterTensors = new Map();
  const m: AdapterTensors = new Map();
  const v: AdapterTensors = new Map();
  for (const [name, entry] of tensors) {
    const [prefix, target] = name.startsWith(PREFIX.adapter) ? [PREFIX.adapter, adapter] : name.startsWith(PREFIX.m) ? [PREFIX.m, m] : name.startsWith(PREFIX.v) ? [PREFIX.v, v] : [null, null];
    if (!prefix) throw new Error(`${file}: unexpected tensor ${name}`);
    if (entry.dtype !== 'F32') throw new Error(`${file}: tensor ${name} is ${entry.dtype}, a trainer state is F32`);
    target.set(name.slice(prefix.length), readTensor(entry));
  }
  if (adapter.size === 0 || m.size !== adapter.size || v.size !== adapter.size) {
    throw new Error(`${file}: holds ${adapter.size} adapter, ${m.size} first-moment and ${v.size} second-moment tensors (they must match and not be empty)`);
  }
  const rest = Object.fromEntries(Object.entries(metadata).filter(([k]) => k !== STEP_KEY));
  return { state: { adapter, optimizer: { step, m, v } }, metadata: rest };
}
