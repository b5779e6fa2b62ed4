// `localtune models list`: the base models found in the models directory, and the folders skipped with the reason; `models import` (export.ts).
import { ConfigError, loadConfig } from '../config.ts';
import { ensureDefaultModel } from '../engine/models/default-model.ts';
import { listBaseModels } from '../engine/models/registry.ts';
import { baseWeightBytes } from '../engine/models/memory-estimate.ts';
import { baseParameters, parameterCount } from '../engine/models/parameters.ts';
import { PRECISIONS } from '../engine/models/quantize.ts';
import { IMPORT_USAGE, importCommand } from './export.ts';
import { rejectExtra, takeOption } from './options.ts';

export const MODELS_USAGE = `usage: localtune models list [--models-dir M] [--data-dir D]
       lists the base models the server can tune and serve (one folder per model under the models directory,
       default DATA_DIR/models; env LOCALTUNE_MODELS_DIR, LOCALTUNE_DATA_DIR) and every folder it skips, with the reason;
       per model its parameter count and its base weights' size at each base precision (fp32, nf4, int4, int8)
${IMPORT_USAGE.replace('usage: ', '       ')}`;

const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 2);

export async function modelsCommand(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  if (action === 'import') return importCommand(rest);
  if (action !== 'list') throw new ConfigError(`unknown models action '${action ?? ''}' (list, import; try localtune models --help)`);
  const flags = ['--models-dir', '--data-dir'].flatMap((name) => {
    const value = takeOption(rest, name);
    return value === undefined ? [] : [name, value];
  });
  rejectExtra(rest, 'localtune models list');
  const { modelsDir } = loadConfig(flags);
  // The server writes the built-in model at start; listing writes it too, so what is listed is what `serve` offers.
  ensureDefaultModel(modelsDir);
  const { models, skipped } = listBaseModels(modelsDir);
  console.log(`models directory: ${modelsDir}`);
  for (const m of models) {
    const c = m.config;
    console.log(`  ${m.id}  ${c.architecture}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, context ${m.contextLength}`);
    const sizes = PRECISIONS.map((p) => `${p} ${gib(baseWeightBytes(c, p).total)}`).join(', ');
    console.log(`    ${(parameterCount(baseParameters(c)) / 1e6).toFixed(1)}M parameters; base weights ${sizes} GiB`);
  }
  for (const s of skipped) console.log(`  skipped ${s.id}: ${s.reason}`);
}
