// A tiny Llama-family model directory for tests: seeded weights in any dtype, one file or two shards.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig } from '../../../src/engine/models/config.ts';
import { baseParameters } from '../../../src/engine/models/parameters.ts';
import { writeSafetensors, type TensorDtype, type TensorToWrite } from '../../../src/engine/models/safetensors.ts';
import { createRng, fillNormal } from '../../../src/engine/random.ts';

export const tinyConfigJson = {
  architectures: ['Qwen2ForCausalLM'], hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 2,
  num_key_value_heads: 1, vocab_size: 16, rms_norm_eps: 1e-6, rope_theta: 10000, max_position_embeddings: 64, tie_word_embeddings: false,
};

export function writeTinyModel(dir: string, options: { dtype?: TensorDtype; shards?: boolean; seed?: number } = {}): Map<string, TensorToWrite> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyConfigJson));
  writeFileSync(join(dir, 'tokenizer.json'), '{}');
  const rng = createRng(options.seed ?? 1);
  const weights = new Map<string, TensorToWrite>();
  for (const spec of baseParameters(parseModelConfig(tinyConfigJson))) {
    const data = fillNormal(rng, new Float32Array(spec.dims.reduce((a, b) => a * b, 1)), 0, 1);
    weights.set(spec.name, { dims: spec.dims, data, dtype: options.dtype ?? 'F32' });
  }
  if (!options.shards) {
    writeSafetensors(join(dir, 'model.safetensors'), weights);
    return weights;
  }
  const names = [...weights.keys()];
  const shards = [names.slice(0, 10), names.slice(10)];
  const weightMap: Record<string, string> = {};
  shards.forEach((part, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(join(dir, file), new Map(part.map((n) => [n, weights.get(n)!])));
    for (const n of part) weightMap[n] = file;
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return weights;
}
