// The `validating_files` stage: check a job's files line by line, then resolve its "auto" hyperparameters from the training file's statistics.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { analyzeTrainingFile, type DatasetStatistics, type HyperparametersRequest, type ResolvedHyperparameters } from '../datasets/statistics.ts';
import { createChatTokenizer } from '../datasets/tokenize-example.ts';
import { validateTrainingFile, type TrainingFileError, type TrainingFormat } from '../datasets/validate.ts';
import { readModelDir } from '../engine/models/model-dir.ts';
import { loadTokenizer } from '../engine/models/tokenizer.ts';

/** What a job asks for, as stored: numbers or "auto" (DPO adds `beta` and localtune's `rpo_alpha`). */
export interface RequestedHyperparameters extends HyperparametersRequest {
  beta?: 'auto' | number;
  rpo_alpha?: 'auto' | number;
}

export interface JobHyperparameters extends ResolvedHyperparameters {
  beta?: number;
  rpo_alpha?: number;
}

/** DPO's usual default strength of the pull towards the reference model. */
export const DEFAULT_DPO_BETA = 0.1;
/**
 * DPO's default weight of the NLL term on the preferred outputs (RPO). Measured on the built-in model (README, "DPO
 * defaults"): without it the preferred answers' content decays into noise while the reward margin grows.
 */
export const DEFAULT_RPO_ALPHA = 1;

export interface FilesToValidate {
  method: 'supervised' | 'dpo';
  modelDir: string;
  trainingPath: string;
  validationPath: string | null;
  hyperparameters: RequestedHyperparameters;
}

export type FilesValidation =
  | { ok: true; hyperparameters: JobHyperparameters; statistics: DatasetStatistics; estimatedTrainedTokens: number }
  | { ok: false; error: TrainingFileError | { code: string; message: string; param: string | null } };

export async function validateJobFiles(f: FilesToValidate): Promise<FilesValidation> {
  const expectedFormat: TrainingFormat = f.method === 'dpo' ? 'preference' : 'chat';
  for (const [path, param] of [[f.trainingPath, 'training_file'], [f.validationPath, 'validation_file']] as const) {
    if (path === null) continue;
    // The file may have been deleted since the job was created.
    if (!existsSync(path)) return { ok: false, error: { code: `invalid_${param}`, message: `The ${param.replace('_', ' ')} was deleted before it could be validated.`, param } };
    const result = await validateTrainingFile(path, { param, expectedFormat });
    if (!result.ok) return { ok: false, error: result.error };
  }
  if (!existsSync(join(f.modelDir, 'config.json'))) {
    return { ok: false, error: { code: 'model_not_available', message: `The base model folder ${f.modelDir} is gone.`, param: 'model' } };
  }
  const model = readModelDir(f.modelDir);
  const analysis = await analyzeTrainingFile(f.trainingPath, {
    format: expectedFormat,
    chat: createChatTokenizer(loadTokenizer(f.modelDir)),
    contextLength: model.contextLength,
    hyperparameters: f.hyperparameters,
  });
  const hyperparameters: JobHyperparameters = { ...analysis.hyperparameters };
  if (f.method === 'dpo') {
    hyperparameters.beta = typeof f.hyperparameters.beta === 'number' ? f.hyperparameters.beta : DEFAULT_DPO_BETA;
    hyperparameters.rpo_alpha = typeof f.hyperparameters.rpo_alpha === 'number' ? f.hyperparameters.rpo_alpha : DEFAULT_RPO_ALPHA;
  }
  return { ok: true, hyperparameters, statistics: analysis.statistics, estimatedTrainedTokens: analysis.estimatedTrainedTokens };
}
