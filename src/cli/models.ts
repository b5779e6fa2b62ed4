// `localtune models list`: the base models found in the models directory, and the folders skipped with the reason; `models import` (export.ts).
import { ConfigError, loadConfig } from '../config.ts';
import { ensureDefaultModel } from '../engine/models/default-model.ts';
import { listBaseModels } from '../engine/models/registry.ts';
import { IMPORT_USAGE, importCommand } from './export.ts';
import { rejectExtra, takeOption } from './options.ts';

export const MODELS_USAGE = `usage: localtune models list [--models-dir M] [--data-dir D]
       lists the base models the server can tune and serve (one folder per model under the models directory,
       default DATA_DIR/models; env LOCALTUNE_MODELS_DIR, LOCALTUNE_DATA_DIR) and every folder it skips, with the reason
${IMPORT_USAGE.replace('usage: ', '       ')}`;

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
  }
  for (const s of skipped) console.log(`  skipped ${s.id}: ${s.reason}`);
}
