// Which precision a job holds its frozen base in: the one owner of the `base_precision: "auto"` policy.
import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { parseModelConfig } from '../engine/models/config.ts';
import { trainingPeakEstimate } from '../engine/models/memory-estimate.ts';
import type { Precision } from '../engine/models/quantize.ts';

export type RequestedPrecision = Precision | 'auto';

/** "Comfortably": an fp32 job's estimated peak within half the machine's memory (the rest: the server, other jobs, the OS). */
export const COMFORTABLE_SHARE = 0.5;

/**
 * The precision a job trains on. An explicit one is kept. `auto`: the precision of the ft: model training continues
 * from (its adapter was fitted to that base); else fp32 when an fp32 job's estimated peak fits comfortably in
 * `memoryBytes`, else nf4 (QLoRA). `modelDir` is the base model's folder (only its config is read).
 */
export function resolveBasePrecision(requested: RequestedPrecision | undefined, modelDir: string, startPrecision: Precision | null, memoryBytes = totalmem()): Precision {
  if (requested && requested !== 'auto') return requested;
  if (startPrecision) return startPrecision;
  const config = parseModelConfig(JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')));
  return trainingPeakEstimate(config, 'fp32') <= COMFORTABLE_SHARE * memoryBytes ? 'fp32' : 'nf4';
}
