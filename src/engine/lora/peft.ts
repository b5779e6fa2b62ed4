// LoRA adapters on disk in the PEFT layout (adapter_config.json + adapter_model.safetensors), so they move to and from PEFT and vLLM.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeTextAtomically } from '../atomic-file.ts';
import type { ModelConfig } from '../models/config.ts';
import { LORA_TARGETS, isLoraTarget, loraModules, loraTensorNames, parseLoraTensorName, type LoraTarget } from '../models/parameters.ts';
import { readSafetensorsHeader, readTensor, writeSafetensors, type TensorDtype } from '../models/safetensors.ts';
import { QUANTIZED_LAYOUT } from '../models/weight-cache.ts';
import { resolveLoraConfig, type LoraConfig } from './config.ts';
import type { AdapterTensors } from './init.ts';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** Safetensors metadata key: the quantized-base layout (weight-cache QUANTIZED_LAYOUT) of the localtune that saved the adapter. */
const QUANTIZED_LAYOUT_KEY = 'localtune_quantized_layout';

export interface LoadedAdapter {
  config: LoraConfig;
  baseModelName: string | null; // base_model_name_or_path as written
  tensors: AdapterTensors; // canonical PEFT names (loraTensorNames)
}

/** adapter_config.json as PEFT writes it (keys sorted, as PEFT's json.dumps(sort_keys=True)). */
function peftConfigJson(config: LoraConfig, baseModelName: string): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModelName,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: config.alpha,
    lora_dropout: config.dropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: config.r,
    rank_pattern: {},
    revision: null,
    target_modules: config.targetModules,
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
  };
  return Object.fromEntries(Object.entries(fields).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * Writes the adapter into `dir` (created if needed), its tensors in `dtype`. Each file is replaced atomically, weights first, so
 * adapter_config.json, written last, marks a complete adapter.
 */
export function saveAdapter(dir: string, config: LoraConfig, tensors: AdapterTensors, baseModelName: string, dtype: TensorDtype = 'F32'): void {
  mkdirSync(dir, { recursive: true });
  const metadata = { format: 'pt', [QUANTIZED_LAYOUT_KEY]: String(QUANTIZED_LAYOUT) };
  writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), new Map([...tensors].map(([name, t]) => [name, { ...t, dtype }])), metadata);
  writeTextAtomically(join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(peftConfigJson(config, baseModelName), null, 2) + '\n');
}

/**
 * The quantized-base layout of the localtune that saved the adapter in `dir` (null: saved elsewhere, or by a localtune
 * whose quantized bases kept the embedding and head fp32). An adapter trained on a quantized base fits that layout.
 */
export function savedQuantizedLayout(dir: string): number | null {
  const v = readSafetensorsHeader(join(dir, ADAPTER_WEIGHTS_FILE)).metadata[QUANTIZED_LAYOUT_KEY];
  return v === undefined ? null : Number(v);
}

function configField(cfg: Record<string, unknown>, field: string, ok: (v: unknown) => boolean, want: string): void {
  if (cfg[field] !== undefined && !ok(cfg[field])) throw new Error(`${ADAPTER_CONFIG_FILE}: ${field} ${JSON.stringify(cfg[field])} is not supported (${want})`);
}

const isEmpty = (v: unknown) => v === null || (typeof v === 'object' && Object.keys(v as object).length === 0);

/**
 * Reads a PEFT LoRA adapter for `modelConfig`. Accepts tensor names with or without the `base_model.model.`
 * prefix, without `.weight`, or with an adapter name (`lora_A.default.weight`); F32/F16/BF16. Throws naming the
 * field or tensor on anything this engine cannot apply exactly (DoRA, per-module ranks, biases, partial layers,
 * shape mismatches, tensors other than LoRA A/B).
 */
export function loadAdapter(dir: string, modelConfig: ModelConfig): LoadedAdapter {
  const configPath = join(dir, ADAPTER_CONFIG_FILE);
  if (!existsSync(configPath)) throw new Error(`${dir}: ${ADAPTER_CONFIG_FILE} is missing`);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${ADAPTER_CONFIG_FILE}: not valid JSON (${(err as Error).message})`);
  }
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) throw new Error(`${ADAPTER_CONFIG_FILE}: must be a JSON object`);
  configField(cfg, 'peft_type', (v) => v === 'LORA', 'LORA');
  configField(cfg, 'use_dora', (v) => v === false, 'false: DoRA adds a magnitude vector this engine does not apply');
  // Whole modules trained beside the LoRA (often lm_head or embed_tokens) would be silently lost.
  configField(cfg, 'modules_to_save', (v) => v === null || (Array.isArray(v) && v.length === 0), 'null: only LoRA projections are applied, not fully trained modules');
  configField(cfg, 'layers_to_transform', (v) => v === null, 'null: the adapter must cover every layer');
  configField(cfg, 'target_modules', (v) => typeof v === 'string' || (Array.isArray(v) && v.every((t) => typeof t === 'string' && isLoraTarget(t))), `a list of ${LORA_TARGETS.join(', ')}`);
  configField(cfg, 'bias', (v) => v === 'none', '"none"');
  configField(cfg, 'fan_in_fan_out', (v) => v === false, 'false');
  configField(cfg, 'rank_pattern', isEmpty, 'one rank for every module');
  configField(cfg, 'alpha_pattern', isEmpty, 'one alpha for every module');
  configField(cfg, 'layer_replication', (v) => v === null, 'null');
  const r = cfg.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new Error(`${ADAPTER_CONFIG_FILE}: r must be a positive integer, got ${JSON.stringify(r)}`);
  const loraAlpha = cfg.lora_alpha ?? 8; // PEFT's default
  if (typeof loraAlpha !== 'number') throw new Error(`${ADAPTER_CONFIG_FILE}: lora_alpha must be a number, got ${JSON.stringify(loraAlpha)}`);
  // rsLoRA scales by alpha/√r; the same update in plain LoRA terms (alpha/r) has alpha·√r.
  const alpha = cfg.use_rslora === true ? loraAlpha * Math.sqrt(r) : loraAlpha;
  const dropout = typeof cfg.lora_dropout === 'number' ? cfg.lora_dropout : 0;

  const weightsPath = join(dir, ADAPTER_WEIGHTS_FILE);
  if (!existsSync(weightsPath)) {
    const bin = existsSync(join(dir, 'adapter_model.bin')) ? ' (adapter_model.bin is a PyTorch pickle: save it with safe_serialization=True)' : '';
    throw new Error(`${dir}: ${ADAPTER_WEIGHTS_FILE} is missing${bin}`);
  }
  const entries = readSafetensorsHeader(weightsPath).tensors;
  const found = new Map<string, string>(); // canonical name -> name in the file
  const targets = new Set<LoraTarget>();
  for (const name of entries.keys()) {
    const parsed = parseLoraTensorName(name);
    if (!parsed) throw new Error(`${weightsPath}: tensor ${name} is not a LoRA A/B tensor of a ${LORA_TARGETS.join('/')} projection`);
    if (parsed.layer >= modelConfig.numLayers) throw new Error(`${weightsPath}: tensor ${name} is for layer ${parsed.layer}, the model has ${modelConfig.numLayers}`);
    const names = loraTensorNames(parsed.layer, parsed.target);
    const canonical = parsed.matrix === 'A' ? names.loraA : names.loraB;
    if (found.has(canonical)) throw new Error(`${weightsPath}: tensors ${found.get(canonical)} and ${name} are the same LoRA matrix`);
    found.set(canonical, name);
    targets.add(parsed.target);
  }
  if (targets.size === 0) throw new Error(`${weightsPath}: holds no LoRA tensors`);
  let config: LoraConfig;
  try {
    config = resolveLoraConfig({ r, alpha, dropout, targetModules: [...targets] });
  } catch (err) {
    throw new Error(`${ADAPTER_CONFIG_FILE}: ${(err as Error).message}`);
  }
  const tensors: AdapterTensors = new Map();
  for (const m of loraModules(modelConfig, config.targetModules)) {
    for (const [canonical, dims] of [[m.loraA, [r, m.in]], [m.loraB, [m.out, r]]] as const) {
      const name = found.get(canonical);
      if (!name) throw new Error(`${weightsPath}: tensor ${canonical} is missing (the adapter must cover ${m.target} in every layer)`);
      const entry = entries.get(name)!;
      if (entry.dims.join(',') !== dims.join(',')) throw new Error(`${weightsPath}: tensor ${name} has shape [${entry.dims}], expected [${dims}] for r=${r} on this model`);
      tensors.set(canonical, readTensor(entry));
    }
  }
  const base = cfg.base_model_name_or_path;
  return { config, baseModelName: typeof base === 'string' ? base : null, tensors };
}
