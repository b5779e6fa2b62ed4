// One job's training run, shared by every method: resume, learning-rate schedule, progress messages, checkpoints,
// resume points, pause and cancel. Every file it writes under jobDir appears whole or not at all.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tempPathBeside } from '../../engine/atomic-file.ts';
import type { BatchPosition } from '../../datasets/batches.ts';
import type { LoraConfig } from '../../engine/lora/config.ts';
import type { AdapterTensors } from '../../engine/lora/init.ts';
import { saveAdapter } from '../../engine/lora/peft.ts';
import { CHECKPOINTS_DIR, FINAL_DIR, type StepMetrics, type TrainingSpec, type WorkerCommand, type WorkerMessage } from '../worker-protocol.ts';
import { JobFailure, type MethodRun } from './method.ts';
import { readResumePoint, RESUME_DIR, resumePointFits, specFingerprint, writeResumePoint, type ResumePoint } from './resume-point.ts';
import { prepareDpo } from './dpo.ts';
import type { MethodSetup } from './method-inputs.ts';
import { prepareSupervised } from './supervised.ts';


export interface JobIO {
  /** Resolves once the message has left this process (so a crash right after cannot lose it). */
  send(m: WorkerMessage): Promise<void>;
  /** Resolves once the scheduler has recorded every message sent so far (never, if it died meanwhile). */
  flush(): Promise<void>;
  /** The command received and not yet acted on (cancel wins over pause and shutdown). */
  pendingCommand(): WorkerCommand['type'] | null;
  log(line: string): void;
}

/**
 * Linear decay from the job's learning rate to 0 over the run (as the hosted service's LoRA fine-tunes and
 * PEFT's default `linear` schedule, without warm-up): step g (0-based) uses lr·(1 − g/total). A function of
 * the step alone, so a resumed run uses exactly the rates of an uninterrupted one.
 */
export function learningRateAt(lr: number, globalStep: number, totalSteps: number): number {
  return lr * (1 - globalStep / totalSteps);
}

export const checkpointDir = (jobDir: string, step: number) => join(jobDir, CHECKPOINTS_DIR, `step-${step}`);

/** Writes a PEFT adapter into a temp folder beside `dir`, then renames it into place. */
function writeAdapterDir(dir: string, lora: LoraConfig, tensors: AdapterTensors, baseModelName: string): void {
  mkdirSync(dirname(dir), { recursive: true });
  const tmp = tempPathBeside(dir);
  saveAdapter(tmp, lora, tensors, baseModelName);
  // A crash between these two leaves no dir: the resume point predates it, so the rerun writes it again.
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
}

/**
 * Removes what a killed worker left half-written (temp files and folders, named by tempPathBeside). Only this job's
 * worker writes under jobDir, and a worker stops when its server goes away, so none of them is still being written.
 */
function removeStaleTemps(jobDir: string): void {
  for (const dir of [jobDir, join(jobDir, CHECKPOINTS_DIR), join(jobDir, RESUME_DIR)]) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) if (name.startsWith('.') && name.endsWith('.tmp')) rmSync(join(dir, name), { recursive: true, force: true });
  }
}

function checkSpec(spec: TrainingSpec): void {
  const { nEpochs, batchSize, learningRate } = spec.hyperparameters;
  if (!Number.isInteger(nEpochs) || nEpochs < 1) throw new JobFailure('invalid_hyperparameters', `n_epochs must be a positive integer, got ${nEpochs}`, 'hyperparameters.n_epochs');
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new JobFailure('invalid_hyperparameters', `batch_size must be a positive integer, got ${batchSize}`, 'hyperparameters.batch_size');
  if (!Number.isFinite(learningRate) || learningRate <= 0) {
    throw new JobFailure('invalid_hyperparameters', `the learning rate must be a positive number, got ${learningRate}`, 'hyperparameters.learning_rate_multiplier');
  }
}

async function prepareMethod(spec: TrainingSpec, log: (line: string) => void): Promise<MethodRun & MethodSetup> {
  if (spec.method === 'supervised') return prepareSupervised(spec, log);
  if (spec.method === 'dpo') return prepareDpo(spec, log);
  throw new JobFailure('unsupported_method', `Fine-tuning method ${JSON.stringify(spec.method)} is not supported; use "supervised" or "dpo"`, 'method');
}

/** Runs the job to its end and sends its final message; a JobFailure or any other error becomes `failed`. */
export async function runTrainingJob(spec: TrainingSpec, io: JobIO): Promise<'succeeded' | 'stopped' | 'failed'> {
  let method: (MethodRun & MethodSetup) | null = null;
  try {
    checkSpec(spec);
    removeStaleTemps(spec.jobDir);
    const fingerprint = specFingerprint(spec);
    let resume: ResumePoint | null;
    try {
      resume = readResumePoint(spec.jobDir);
    } catch (e) {
      throw new JobFailure('server_error', `The job's resume point cannot be read, so the job cannot continue: ${(e as Error).message}`);
    }
    if (resume && !resumePointFits(resume, spec, fingerprint)) {
      throw new JobFailure('server_error', `The job's resume point in ${spec.jobDir} was written for other training inputs or hyperparameters; refusing to mix them`);
    }
    method = await prepareMethod(spec, io.log);
    const m = method;
    const totalSteps = m.stepsPerEpoch * m.epochs;
    let position: BatchPosition = { epoch: 0, step: 0 };
    let globalStep = 0;
    let trainedTokens = 0;
    let lastMetrics: StepMetrics | null = null;
    if (resume) {
      m.setState(resume.state);
      ({ position, globalStep, trainedTokens, lastMetrics } = resume);
      io.log(`resuming after step ${globalStep} of ${totalSteps}`);
    }
    let lastResumePoint = Date.now();
    // Said once written, so the scheduler can publish it for a node that may take the job over.
    const saveResumePoint = async () => {
      // Steps whose messages the scheduler never read (it died) are done again from the previous resume point.
      await io.flush();
      writeResumePoint(spec.jobDir, { fingerprint, position, globalStep, trainedTokens, lastMetrics, state: m.getState() });
      lastResumePoint = Date.now();
      await io.send({ type: 'resume-point', step: globalStep });
    };
    await io.send({ type: 'started', device: m.device, totalSteps, stepsPerEpoch: m.stepsPerEpoch, resumedFromStep: globalStep });
    // The resume point may have been written after the server died with step `globalStep`'s message unread: send it again
    // (the scheduler stores one metrics event per step, so a repeat replaces itself).
    if (lastMetrics) await io.send({ type: 'step', metrics: lastMetrics, trainedTokens });
    // Likewise an epoch end's checkpoint message (the scheduler keeps one checkpoint per step).
    if (lastMetrics && position.step === 0) {
      const dir = checkpointDir(spec.jobDir, globalStep);
      if (existsSync(dir)) await io.send({ type: 'checkpoint', step: globalStep, epoch: position.epoch, dir, metrics: lastMetrics });
    }

    for (const planned of m.steps(position)) {
      const command = io.pendingCommand();
      if (command === 'cancel') {
        await io.send({ type: 'stopped', reason: 'cancel', step: globalStep });
        return 'stopped';
      }
      if (command === 'pause' || command === 'shutdown') {
        await saveResumePoint();
        await io.send({ type: 'stopped', reason: command, step: globalStep });
        return 'stopped';
      }
      const { metrics, trainedTokens: stepTokens, warning } = await planned.run(learningRateAt(spec.hyperparameters.learningRate, planned.globalStep, totalSteps));
      if (warning) await io.send({ type: 'warning', message: warning });
      globalStep = planned.globalStep + 1;
      trainedTokens += stepTokens;
      const epochEnd = planned.step === m.stepsPerEpoch - 1;
      const stepMetrics: StepMetrics = {
        step: globalStep,
        ...metrics,
        ...(await m.sampleValidation(globalStep, totalSteps)),
        ...(epochEnd ? await m.epochValidation(planned.epoch + 1) : null),
      };
      lastMetrics = stepMetrics;
      position = epochEnd ? { epoch: planned.epoch + 1, step: 0 } : { epoch: planned.epoch, step: planned.step + 1 };
      await io.send({ type: 'step', metrics: stepMetrics, trainedTokens });
      if (epochEnd) {
        const dir = checkpointDir(spec.jobDir, globalStep);
        writeAdapterDir(dir, m.lora, m.getState().adapter, m.baseModelName);
        await io.send({ type: 'checkpoint', step: globalStep, epoch: planned.epoch + 1, dir, metrics: stepMetrics });
        await saveResumePoint(); // after the message: a crash in between replays the epoch's last step rather than losing the checkpoint
      } else if (Date.now() - lastResumePoint >= spec.resumePointSeconds * 1000) {
        await saveResumePoint();
      }
    }

    const dir = join(spec.jobDir, FINAL_DIR);
    writeAdapterDir(dir, m.lora, m.getState().adapter, m.baseModelName);
    if (!lastMetrics) throw new Error('training ended without a single step');
    await io.send({ type: 'succeeded', dir, trainedTokens, metrics: lastMetrics });
    return 'succeeded';
  } catch (e) {
    const failure = e instanceof JobFailure ? e : new JobFailure('server_error', (e as Error).message ?? String(e));
    if (!(e instanceof JobFailure)) io.log(`training failed: ${(e as Error).stack ?? e}`);
    await io.send({ type: 'failed', code: failure.code, message: failure.message, param: failure.param });
    return 'failed';
  } finally {
    await method?.close();
  }
}
