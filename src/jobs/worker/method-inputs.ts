// What every training method reads before it trains: the model and its chat tokenizer, the adapter to continue from,
// the tokenized files, micro-batch sizing and the schedule of validation samples.
import { basename } from 'node:path';
import { epochOrder } from '../../datasets/shuffle.ts';
import { createChatTokenizer, type ChatTokenizer, type TokenizedExample } from '../../datasets/tokenize-example.ts';
import type { LoraConfig } from '../../engine/lora/config.ts';
import type { AdapterTensors } from '../../engine/lora/init.ts';
import { loadAdapter } from '../../engine/lora/peft.ts';
import { readModelDir, type ModelDir } from '../../engine/models/model-dir.ts';
import { loadTokenizer } from '../../engine/models/tokenizer.ts';
import { seqLenBucket } from '../../engine/train/batch.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import type { Trainer } from '../../engine/train/trainer.ts';
import { JobFailure, type MethodRun } from './method.ts';

/**
 * Tokens per micro-batch (rows × padded length): a step's examples run in micro-batches of
 * ⌊MICRO_BATCH_TOKENS / T⌋ rows (T the length bucket of the longest example), gradients summed, so memory
 * stays bounded whatever the batch size.
 */
export const MICRO_BATCH_TOKENS = 2048;
/** Sample validations per run at most: one every ⌈total steps / VALIDATIONS_PER_RUN⌉ steps, each on batch_size examples. */
export const VALIDATIONS_PER_RUN = 50;

/** What the job loop needs besides the MethodRun: the LoRA settings the run trains with (to save adapters) and the base model's name. */
export interface MethodSetup {
  lora: LoraConfig;
  baseModelName: string;
}

export interface MethodModel {
  model: ModelDir;
  contextLength: number;
  chat: ChatTokenizer;
  padTokenId: number;
  baseModelName: string;
}

export function loadMethodModel(spec: TrainingSpec): MethodModel {
  const model = readModelDir(spec.modelDir);
  const tokenizer = loadTokenizer(spec.modelDir);
  return { model, contextLength: model.contextLength, chat: createChatTokenizer(tokenizer), padTokenId: tokenizer.padTokenId ?? 0, baseModelName: basename(spec.modelDir) };
}

/** The LoRA settings the run trains with and the adapter it starts from: a start adapter brings its own rank, alpha and targets. */
export function startingAdapter(spec: TrainingSpec, model: ModelDir, log: (line: string) => void): { lora: LoraConfig; startAdapter?: AdapterTensors } {
  if (!spec.startAdapterDir) return { lora: spec.lora };
  try {
    const loaded = loadAdapter(spec.startAdapterDir, model.config);
    // The adapter fixes rank, alpha and targets; the job still chooses dropout.
    const lora = { ...loaded.config, dropout: spec.lora.dropout };
    if (JSON.stringify({ ...lora, dropout: 0 }) !== JSON.stringify({ ...spec.lora, dropout: 0 })) {
      log(`continuing the adapter in ${spec.startAdapterDir}: r=${lora.r}, alpha=${lora.alpha} on ${lora.targetModules.join(',')} (its own settings)`);
    }
    return { lora, startAdapter: loaded.tensors };
  } catch (e) {
    throw new JobFailure('invalid_model', `The adapter to continue from does not fit ${basename(spec.modelDir)}: ${(e as Error).message}`, 'model');
  }
}

/** Every item of a tokenized file; a line that fails becomes the job's invalid_training_file / invalid_validation_file. */
export async function readTokenized<T>(lines: AsyncIterable<T>, param: 'training_file' | 'validation_file'): Promise<T[]> {
  const items: T[] = [];
  try {
    for await (const item of lines) items.push(item);
  } catch (e) {
    const which = param === 'training_file' ? 'training' : 'validation';
    throw new JobFailure(`invalid_${param}`, `Invalid ${which} file: ${(e as Error).message}`, param);
  }
  return items;
}

/** How a method names its items in messages: e.g. "example(s)", "has an assistant token to train on", "examples". */
export interface TrainableWords {
  items: string;
  requirement: string;
  truncated: string;
}

/**
 * The training and validation items with something to learn within the context (the others are skipped, with a log
 * line); a training file left with none fails the job.
 */
export async function readTrainableFiles<T>(
  spec: TrainingSpec,
  read: (path: string) => AsyncIterable<T>,
  trainable: (item: T) => boolean,
  words: TrainableWords,
  contextLength: number,
  log: (line: string) => void,
): Promise<{ training: T[]; validation: T[] }> {
  const keep = async (path: string, param: 'training_file' | 'validation_file') => {
    const all = await readTokenized(read(path), param);
    const kept = all.filter(trainable);
    const which = param === 'training_file' ? 'training' : 'validation';
    if (kept.length < all.length) log(`${all.length - kept.length} ${which} ${words.items} skipped: none ${words.requirement} within the ${contextLength}-token context`);
    return { all, kept };
  };
  const training = await keep(spec.trainingFile, 'training_file');
  if (training.kept.length === 0) {
    throw new JobFailure(
      'invalid_training_file',
      `Invalid training file: none of its ${training.all.length} ${words.items} ${words.requirement} within the model's ${contextLength}-token context (longer ${words.truncated} are truncated from the end)`,
      'training_file',
    );
  }
  const validation = spec.validationFile ? (await keep(spec.validationFile, 'validation_file')).kept : [];
  return { training: training.kept, validation };
}

/** The part of a MethodRun that only hands the trainer's state through. */
export function trainerStateOf(trainer: TrainerStateHolder): Pick<MethodRun, 'getState' | 'setState' | 'close'> {
  return {
    getState: () => ({ adapter: trainer.getAdapter(), optimizer: trainer.getOptimizerState() }),
    setState(state) {
      trainer.setAdapter(state.adapter);
      trainer.setOptimizerState(state.optimizer);
    },
    close: () => trainer.close(),
  };
}

type TrainerStateHolder = Pick<Trainer, 'getAdapter' | 'setAdapter' | 'getOptimizerState' | 'setOptimizerState' | 'close'>;

/** The first trained prediction within the context: position t predicts token t+1, so weight t+1 must fall inside it. */
export function hasTrainedToken(e: TokenizedExample, contextLength: number): boolean {
  const end = Math.min(e.ids.length, contextLength);
  for (let i = 1; i < end; i++) if (e.weights[i] === 1) return true;
  return false;
}

/** Rows per micro-batch so that rows × (the longest sequence's bucket) stays within MICRO_BATCH_TOKENS; at most maxRows. */
export function microBatchRowsFor(longestTokens: number, contextLength: number, maxRows: number): number {
  return Math.max(1, Math.min(maxRows, Math.floor(MICRO_BATCH_TOKENS / seqLenBucket(Math.min(longestTokens, contextLength), contextLength))));
}

/**
 * Which validation items to evaluate after `globalStep` of `totalSteps` steps, or null when no sample is due: up to
 * VALIDATIONS_PER_RUN samples of `sampleSize` items each, the k-th continuing where the previous one stopped in a seeded
 * order, so samples cycle through the file.
 */
export function validationSchedule(count: number, seed: number, sampleSize: number): (globalStep: number, totalSteps: number) => number[] | null {
  const order = epochOrder(count, seed, 0);
  const size = Math.min(count, sampleSize);
  return (globalStep, totalSteps) => {
    if (size === 0) return null;
    const every = Math.max(1, Math.ceil(totalSteps / VALIDATIONS_PER_RUN));
    if (globalStep % every !== 0 && globalStep !== totalSteps) return null;
    const first = Math.floor(globalStep / every) * size;
    return Array.from({ length: size }, (_, j) => order[(first + j) % count]!);
  };
}
