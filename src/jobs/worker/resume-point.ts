// A job's resume point: trainer state (adapter, AdamW moments and step), data position and counters, in jobDir/resume/,
// replaced atomically; the scheduler publishes the folder so that a node taking the job over continues from it.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
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

/** SHA-256 of a file's bytes, read in 1 MiB pieces (a training file may be gigabytes). */
function fileSha256(path: string): string {
  const hash = createHash('sha256');
  const buffer = Buffer.alloc(1 << 20);
  const fd = openSync(path, 'r');
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** SHA-256 of each file of an adapter folder, by name (a PEFT folder is flat; anything else there is not the adapter). */
const dirSha256 = (dir: string) =>
  Object.fromEntries(readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name).sort().map((name) => [name, fileSha256(join(dir, name))]));

/** The hash of the spec's training settings around `inputs` (which name the data and models). Key order is part of the hash. */
function settingsHash(spec: TrainingSpec, inputs: Record<string, unknown>): string {
  const key = {
    method: spec.method,
    ...inputs,
    hyperparameters: spec.hyperparameters,
    lora: spec.lora,
    // Absent (fp32) keeps the fingerprint of resume points written before precisions existed.
    ...(spec.basePrecision !== 'fp32' ? { basePrecision: spec.basePrecision } : {}),
    seed: spec.seed,
  };
  return createHash('sha256').update(JSON.stringify(key)).digest('hex');
}

/**
 * What must not change between a run and its resumption, by content rather than by path: a node taking the job over
 * reads the same files from its own cache (blobs' local paths and data directories differ per node). The training
 * inputs' bytes, the base model by name (base models are per node, and a job only goes to nodes that have its base),
 * the bytes of the adapter training continues from, hyperparameters and seed. Threads, device and the resume-point
 * interval may change.
 */
export function specFingerprint(spec: TrainingSpec): string {
  return settingsHash(spec, {
    baseModel: basename(spec.modelDir),
    startAdapter: spec.startAdapterDir === null ? null : dirSha256(spec.startAdapterDir),
    trainingFile: fileSha256(spec.trainingFile),
    validationFile: spec.validationFile === null ? null : fileSha256(spec.validationFile),
  });
}

/**
 * The fingerprint resume points had before they moved between nodes: paths and file sizes. Still accepted, so a job
 * left running by the previous version resumes on the node that wrote it (the only node where those paths match).
 */
function pathFingerprint(spec: TrainingSpec): string {
  const size = (path: string | null) => (path && existsSync(path) ? statSync(path).size : null);
  return settingsHash(spec, {
    modelDir: spec.modelDir,
    startAdapterDir: spec.startAdapterDir,
    trainingFile: [spec.trainingFile, size(spec.trainingFile)],
    validationFile: [spec.validationFile, size(spec.validationFile)],
  });
}

/** Whether `point` was written for this spec's inputs (`fingerprint`: specFingerprint(spec), computed once by the caller). */
export const resumePointFits = (point: ResumePoint, spec: TrainingSpec, fingerprint: string): boolean =>
  point.fingerprint === fingerprint || point.fingerprint === pathFingerprint(spec);

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
