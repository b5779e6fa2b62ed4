// What a training method (supervised or DPO) gives the shared job loop: its steps, their metrics, its validation.
import type { BatchPosition } from '../../datasets/batches.ts';
import type { Device } from '../../engine/onnx/session.ts';
import type { TrainerState } from '../../engine/train/trainer-state.ts';
import type { StepMetrics } from '../worker-protocol.ts';

/** A problem the user can act on: becomes a `failed` message with this code, param and message. */
export class JobFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** The metrics one training step produces (the loop adds `step`). */
export type PartialMetrics = Omit<StepMetrics, 'step'>;
/** The metrics a validation adds to its step's (valid_* or full_valid_*, and DPO's valid_reward_*). */
export type ValidationMetrics = Partial<PartialMetrics>;

export interface PlannedStep {
  epoch: number;
  /** Step within the epoch, from 0. */
  step: number;
  /** Steps done before this one over the whole run. */
  globalStep: number;
  /** Runs the optimizer step at learning rate `lr`; a `warning` is for the user (a warn event). */
  run(lr: number): Promise<{ metrics: PartialMetrics; trainedTokens: number; warning?: string }>;
}

/** A method's training run over its loaded data and its trainer. */
export interface MethodRun {
  device: Device;
  stepsPerEpoch: number;
  epochs: number;
  /** The steps from `from` to the end of training, in order (the same steps an uninterrupted run takes from there). */
  steps(from: BatchPosition): Iterable<PlannedStep>;
  /** Validation metrics on a sample, when due after `globalStep` steps are done; null when not due or no validation data. */
  sampleValidation(globalStep: number, totalSteps: number): Promise<ValidationMetrics | null>;
  /**
   * Validation at the end of epoch `epoch` (1-based): loss over the whole validation file (full_valid_*) and, when due,
   * scored greedy answers to validation prompts; null without validation data.
   */
  epochValidation(epoch: number): Promise<ValidationMetrics | null>;
  getState(): TrainerState;
  setState(state: TrainerState): void;
  close(): Promise<void>;
}
