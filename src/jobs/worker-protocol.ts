// What the job scheduler (in the server process) and the training worker (a child process) say to each other.
// The worker owns the job's folder on disk; the scheduler owns the database and turns these messages into
// state transitions, events, checkpoints and models.
import type { LoraConfig } from '../engine/lora/config.ts';
import type { DeviceRequest } from '../engine/onnx/session.ts';
import type { Precision } from '../engine/models/quantize.ts';

export type TrainingMethod = 'supervised' | 'dpo';

/** Under its job folder a worker writes checkpoints/step-N/ (an adapter per epoch end) and final/ (the result). */
export const CHECKPOINTS_DIR = 'checkpoints';
export const FINAL_DIR = 'final';

/** Everything a worker needs to train (or resume) one job. The same spec is sent again on resume. */
export interface TrainingSpec {
  jobId: string;
  method: TrainingMethod;
  /** The base model's Hugging Face directory and its cache folder (aligned weights, built graphs). */
  modelDir: string;
  cacheDir: string;
  /** The adapter training continues from when `model` was an `ft:` model (and DPO's fixed reference); null: fresh adapter. */
  startAdapterDir: string | null;
  /** Paths of the validated training and validation JSONL files. */
  trainingFile: string;
  validationFile: string | null;
  /** Resolved numbers; `auto` was decided by the scheduler from the file statistics. */
  /** rpoAlpha: DPO's weight of the preferred outputs' NLL term (absent: 0, as for jobs created before it existed). */
  hyperparameters: { nEpochs: number; batchSize: number; learningRate: number; beta?: number; rpoAlpha?: number };
  lora: LoraConfig;
  /** The frozen base's precision (fp32, or the projections block-quantized). */
  basePrecision: Precision;
  seed: number;
  /** The job's own folder: the worker writes checkpoints/, resume/ and final/ under it, each atomically. */
  jobDir: string;
  /** Seconds between resume points (optimizer state + data position), besides the one written on pause. */
  resumePointSeconds: number;
  device: DeviceRequest;
  threads?: number;
}

/** Per-step numbers, named as in the hosted service's metrics events and result file. */
export interface StepMetrics {
  step: number;
  train_loss: number;
  train_mean_token_accuracy: number;
  valid_loss?: number;
  valid_mean_token_accuracy?: number;
  full_valid_loss?: number;
  full_valid_mean_token_accuracy?: number;
  /** DPO only: how often, and by how much, the policy's implicit reward favours the preferred output. */
  train_reward_accuracy?: number;
  train_reward_margin?: number;
  valid_reward_accuracy?: number;
  valid_reward_margin?: number;
  /** DPO only: mean per-token log-probability of the step's preferred outputs under the policy minus the reference's. */
  train_preferred_logp_shift?: number;
  /**
   * Epoch ends with a validation file: greedy answers to validation prompts, scored against the reference (DPO: the
   * preferred output): share equal after whitespace normalisation, mean chrF in [0, 1], and (DPO) share closer to the
   * preferred than to the non-preferred output; plus the first few prompts with both answers.
   */
  valid_exact_match?: number;
  valid_answer_similarity?: number;
  valid_closer_to_preferred?: number;
  valid_samples?: AnswerSample[];
}

/** A validation prompt (its rendered text, special tokens left out), the answer it should get and the one the model gave. */
export interface AnswerSample {
  prompt: string;
  reference: string;
  answer: string;
}

/** Worker → scheduler. */
export type WorkerMessage =
  | { type: 'started'; device: string; totalSteps: number; stepsPerEpoch: number; resumedFromStep: number }
  | { type: 'step'; metrics: StepMetrics; trainedTokens: number }
  /** An epoch-end checkpoint: `dir` (under jobDir) holds the adapter in the PEFT layout. */
  | { type: 'checkpoint'; step: number; epoch: number; dir: string; metrics: StepMetrics }
  /**
   * Asks for `flushed` once every message before this one is recorded. Sent before each resume point is written: a
   * resume point never runs ahead of what the database holds, so a job resumed from it loses no step's events.
   */
  | { type: 'flush' }
  /** A resume point for step `step` is now in jobDir/resume/ (written whole). */
  | { type: 'resume-point'; step: number }
  /** Training finished: `dir` holds the final adapter. */
  | { type: 'succeeded'; dir: string; trainedTokens: number; metrics: StepMetrics }
  /** Stopped on request after writing a resume point (pause, shutdown: its `resume-point` came first) or not (cancel). */
  | { type: 'stopped'; reason: WorkerCommand['type']; step: number }
  /** Something the user should look at while training goes on (becomes a `warn` event). */
  | { type: 'warning'; message: string }
  /** A problem the user can act on (code and message go into the job's `error`). */
  | { type: 'failed'; code: string; message: string; param?: string | null };

/**
 * Scheduler → worker; honoured within one training step. `shutdown`: the server is stopping; save a resume point
 * and exit, and the job continues from there at the next start.
 */
export type WorkerCommand = { type: 'pause' } | { type: 'cancel' } | { type: 'shutdown' };

/** Scheduler → worker, the answer to `flush`. */
export type WorkerReply = { type: 'flushed' };
