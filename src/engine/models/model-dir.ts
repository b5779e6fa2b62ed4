// A base-model directory in Hugging Face layout: config.json, *.safetensors (+ index), tokenizer.json (+ tokenizer_config.json).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig, type ModelConfig } from './config.ts';
import { baseParameters } from './parameters.ts';
import { listModelTensors, type TensorEntry } from './safetensors.ts';

export interface ModelDir {
  dir: string;
  config: ModelConfig;
  /** Longest sequence the model handles: max_position_embeddings, capped by a sliding window. */
  contextLength: number;
  tokenizerPath: string; // tokenizer.json
  tokenizerConfigPath: string | null; // tokenizer_config.json (chat_template, special tokens)
  generationConfigPath: string | null; // generation_config.json
  /** Every base parameter's source tensor, by parameter-table name. */
  tensors: Map<string, TensorEntry>;
}

const READABLE_DTYPES = new Set(['F32', 'F16', 'BF16']);

/**
 * Checks that every tensor of the parameter table is present with the right shape and a readable dtype.
 * Extra tensors (e.g. rotary inv_freq buffers, an lm_head.weight beside tied embeddings) are ignored.
 */
export function checkModelTensors(config: ModelConfig, tensors: ReadonlyMap<string, TensorEntry>, where: string): Map<string, TensorEntry> {
  const found = new Map<string, TensorEntry>();
  for (const spec of baseParameters(config)) {
    const entry = tensors.get(spec.name);
    if (!entry) throw new Error(`${where}: tensor ${spec.name} [${spec.dims}] is missing`);
    if (entry.dims.join(',') !== spec.dims.join(',')) throw new Error(`${where}: tensor ${spec.name} has shape [${entry.dims}], config.json implies [${spec.dims}]`);
    if (!READABLE_DTYPES.has(entry.dtype)) throw new Error(`${where}: tensor ${spec.name} has dtype ${entry.dtype}; only F32, F16 and BF16 are supported`);
    found.set(spec.name, entry);
  }
  return found;
}

/** Reads and checks a model directory (headers only, no weights). Throws with the reason when it is not usable. */
export function readModelDir(dir: string): ModelDir {
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new Error(`${dir}: config.json is missing`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch (err) {
    throw new Error(`${configPath}: not valid JSON (${(err as Error).message})`);
  }
  const config = parseModelConfig(json);
  const tokenizerPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokenizerPath)) throw new Error(`${dir}: tokenizer.json is missing`);
  const tensors = checkModelTensors(config, listModelTensors(dir), dir);
  const optional = (name: string) => (existsSync(join(dir, name)) ? join(dir, name) : null);
  return {
    dir,
    config,
    contextLength: Math.min(config.maxPositionEmbeddings, config.slidingWindow ?? Infinity),
    tokenizerPath,
    tokenizerConfigPath: optional('tokenizer_config.json'),
    generationConfigPath: optional('generation_config.json'),
    tensors,
  };
}
