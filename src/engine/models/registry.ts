// The base models available under the models directory: each subfolder is one model, its folder name the model id.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from './config.ts';
import { readModelDir } from './model-dir.ts';

export interface BaseModelInfo {
  id: string; // directory name
  dir: string;
  config: ModelConfig;
  contextLength: number;
}

export interface SkippedModelDir {
  id: string;
  dir: string;
  reason: string;
}

/** Ids appear inside `ft:<base>:…` model names, so they may not hold ':' or path characters. */
export const MODEL_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Lists usable models and, for `localtune models list`, the folders that are not usable and why. Hidden folders (temp files) are ignored. */
export function listBaseModels(modelsDir: string): { models: BaseModelInfo[]; skipped: SkippedModelDir[] } {
  const models: BaseModelInfo[] = [];
  const skipped: SkippedModelDir[] = [];
  if (!existsSync(modelsDir)) return { models, skipped };
  for (const id of readdirSync(modelsDir).sort()) {
    const dir = join(modelsDir, id);
    if (id.startsWith('.') || !statSync(dir).isDirectory()) continue;
    if (!MODEL_ID_PATTERN.test(id)) {
      skipped.push({ id, dir, reason: `directory name must match ${MODEL_ID_PATTERN} to be used as a model id` });
      continue;
    }
    try {
      const m = readModelDir(dir);
      models.push({ id, dir, config: m.config, contextLength: m.contextLength });
    } catch (err) {
      skipped.push({ id, dir, reason: (err as Error).message });
    }
  }
  return { models, skipped };
}
