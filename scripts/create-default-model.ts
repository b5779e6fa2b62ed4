// Writes the built-in default model (random weights, byte-level ChatML tokenizer) into a folder: `tsx scripts/create-default-model.ts [--out DIR] [--seed N]`.
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL_ID, DEFAULT_MODEL_SEED, writeDefaultModel } from '../src/engine/models/default-model.ts';

const { values } = parseArgs({
  options: { out: { type: 'string', default: `data/models/${DEFAULT_MODEL_ID}` }, seed: { type: 'string', default: String(DEFAULT_MODEL_SEED) } },
});
const seed = Number(values.seed);
if (!Number.isInteger(seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);
writeDefaultModel(values.out!, seed);
console.log(`wrote ${DEFAULT_MODEL_ID} (seed ${seed}) to ${values.out}`);
