// A job's resume point: trainer state (adapter, AdamW moments and step), data position and counters, in jobDir/resume/, replaced atomically.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { BatchPosition } from '../../datasets/batches.ts';
import { readTrainerState, writeTrainerState, type TrainerState } from '../../engine/train/trainer-state.ts';
import type { StepMetrics, TrainingSpec } from '../worker-protocol.ts';

export const RESUME_DIR = 'resume';
export const RESUME_FILE = 'resume-point.safetensors';
const META_KEY = 'localtune_resume_point';

export interface ResumePoint {
  /** Which spec and data it belongs to (specFingerprint); a point written for another spec is never used. */
  fingerprint: string;
  /** The next step to run. */
  position: BatchPosition;
  /** Optimizer steps done (the step the job resumes after). */
  globalStep: number;
  trainedTokens: number;
  /** The metrics of step `globalStep` (sent again with `succeeded` when the job ends right after resuming). */
  lastMetrics: StepMetrics | null;
  state: TrainerState;
}

export const resumePointPath = (jobDir: string) => join(jobDir, RESUME_DIR, RESUME_FILE);

/**
 * What must not change between a run and its resumption: the training inputs and hyperparameters, and the files'
 * sizes (uploaded files are immutable; this catches a path that now names something else). Threads, device and the
 * resume-point interval may change.
 */
export function specFingerprint(spec: TrainingSpec): string {
  const size = (path: string | null) => (path && existsSync(path) ? statSync(path).size : null);
  const key = {
    method: spec.method,
    modelDir: spec.modelDir,
    startAdapterDir: spec.startAdapterDir,
    trainingFile: [spec.trainingFile, size(spec.trainingFile)],
    validationFile: [spec.validationFile, size(spec.validationFile)],
    hyperparameters: spec.hyperparameters,
    lora: spec.lora,
    // Absent (fp32) keeps the fingerprint of resume points written before precisions existed.
    ...(spec.basePrecision !== 'fp32' ? { basePrecision: spec.basePrecision } : {}),
    seed: spec.seed,
  };
  return createHash('sha256').update(JSON.stringify(key)).digest('hex');
}

export function writeResumePoint(jobDir: string, point: ResumePoint): void {
  mkdirSync(join(jobDir, RESUME_DIR), { recursive: true });
  const { state, ...rest } = point;
  writeTrainerState(resumePointPath(jobDir), state, { [META_KEY]: JSON.stringify(rest) });
}

/** The job's resume point, or null when it has none yet; throws naming the file when it cannot be read. */
export function readResumePoint(jobDir: string): ResumePoint | null {
  const file = resumePointPath(jobDir);
  if (!existsSync(file)) return null;
  const { state, metadata } = readTrainerState(file);
  if (!metadata[META_KEY]) throw new Error(`${file}: ${META_KEY} is missing from its metadata`);
  const rest = JSON.parse(metadata[META_KEY]) as Omit<ResumePoint, 'state'>;
  const { position, globalStep, trainedTokens } = rest;
  if (!position || !Number.isInteger(position.epoch) || !Number.isInteger(position.step) || !Number.isInteger(globalStep) || !Number.isFinite(trainedTokens)) {
    throw new Error(`${file}: ${META_KEY} is incomplete: ${metadata[META_KEY]}`);
  }
  return { ...rest, state };
}
