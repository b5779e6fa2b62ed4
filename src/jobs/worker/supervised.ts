// Supervised fine-tuning: chat examples tokenized with the model's template, seeded batches, masked cross-entropy steps.
import { basename } from 'node:path';
import { buildMicroBatch, stepsPerEpoch, trainSteps, type BatchPlan } from '../../datasets/batches.ts';
import { epochOrder } from '../../datasets/shuffle.ts';
import { tokenizeChatFile } from '../../datasets/tokenize-file.ts';
import { createChatTokenizer, type ChatTokenizer, type TokenizedExample } from '../../datasets/tokenize-example.ts';
import { loadAdapter } from '../../engine/lora/peft.ts';
import type { LoraConfig } from '../../engine/lora/config.ts';
import type { AdapterTensors } from '../../engine/lora/init.ts';
import { readModelDir } from '../../engine/models/model-dir.ts';
import { loadTokenizer } from '../../engine/models/tokenizer.ts';
import { seqLenBucket, type TrainBatch } from '../../engine/train/batch.ts';
import { createTrainer, type Trainer } from '../../engine/train/trainer.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import { JobFailure, type MethodRun, type ValidationMetrics } from './method.ts';

/**
 * Tokens per micro-batch (rows × padded length): a step's examples run in micro-batches of
 * ⌊MICRO_BATCH_TOKENS / T⌋ rows (T the length bucket of the longest example), gradients summed, so memory
 * stays bounded whatever the batch size.
 */
export const MICRO_BATCH_TOKENS = 2048;
/** Sample validations per run at most: one every ⌈total steps / VALIDATIONS_PER_RUN⌉ steps, each on batch_size examples. */
export const VALIDATIONS_PER_RUN = 50;

/** The model and the LoRA settings the run trains with: a start adapter brings its own rank, alpha and targets. */
export interface SupervisedSetup {
  lora: LoraConfig;
  baseModelName: string;
}

/** The first trained prediction within the context: position t predicts token t+1, so weight t+1 must fall inside it. */
function hasTrainedToken(e: TokenizedExample, contextLength: number): boolean {
  const end = Math.min(e.ids.length, contextLength);
  for (let i = 1; i < end; i++) if (e.weights[i] === 1) return true;
  return false;
}

async function readExamples(path: string, chat: ChatTokenizer, param: 'training_file' | 'validation_file'): Promise<TokenizedExample[]> {
  const examples: TokenizedExample[] = [];
  try {
    for await (const e of tokenizeChatFile(path, chat)) examples.push(e);
  } catch (e) {
    const which = param === 'training_file' ? 'training' : 'validation';
    throw new JobFailure(`invalid_${param}`, `Invalid ${which} file: ${(e as Error).message}`, param);
  }
  return examples;
}

/** Micro-batches over `examples` in the given order: grouped by length (least padding), `rows` per micro-batch. */
function microBatchesOf(examples: TokenizedExample[], rows: number, contextLength: number, padTokenId: number): TrainBatch[] {
  const byLength = [...examples].sort((a, b) => a.ids.length - b.ids.length);
  const out: TrainBatch[] = [];
  for (let i = 0; i < byLength.length; i += rows) out.push(buildMicroBatch(byLength.slice(i, i + rows), contextLength, padTokenId));
  return out;
}

export async function prepareSupervised(spec: TrainingSpec, log: (line: string) => void): Promise<MethodRun & SupervisedSetup> {
  const { nEpochs, batchSize } = spec.hyperparameters;
  const model = readModelDir(spec.modelDir);
  const { contextLength } = model;
  const tokenizer = loadTokenizer(spec.modelDir);
  const chat = createChatTokenizer(tokenizer);
  const padTokenId = tokenizer.padTokenId ?? 0;

  const all = await readExamples(spec.trainingFile, chat, 'training_file');
  const examples = all.filter((e) => hasTrainedToken(e, contextLength));
  if (examples.length === 0) {
    throw new JobFailure(
      'invalid_training_file',
      `Invalid training file: none of its ${all.length} example(s) has an assistant token to train on within the model's ${contextLength}-token context (longer examples are truncated from the end)`,
      'training_file',
    );
  }
  if (examples.length < all.length) log(`${all.length - examples.length} training example(s) have no trained token within the ${contextLength}-token context; skipped`);

  let validation: TokenizedExample[] = [];
  if (spec.validationFile) {
    const allValid = await readExamples(spec.validationFile, chat, 'validation_file');
    validation = allValid.filter((e) => hasTrainedToken(e, contextLength));
    if (validation.length < allValid.length) log(`${allValid.length - validation.length} validation example(s) have no trained token within the context; skipped`);
  }

  const longest = Math.max(...examples.map((e) => Math.min(e.ids.length, contextLength)));
  const microBatchRows = Math.max(1, Math.min(batchSize, Math.floor(MICRO_BATCH_TOKENS / seqLenBucket(longest, contextLength))));
  const plan: BatchPlan = { examples, batchSize, microBatchRows, contextLength, seed: spec.seed, epochs: nEpochs, padTokenId };

  let lora = spec.lora;
  let startAdapter: AdapterTensors | undefined;
  if (spec.startAdapterDir) {
    try {
      const loaded = loadAdapter(spec.startAdapterDir, model.config);
      startAdapter = loaded.tensors;
      // The adapter fixes rank, alpha and targets; the job still chooses dropout.
      lora = { ...loaded.config, dropout: spec.lora.dropout };
      if (JSON.stringify({ ...lora, dropout: 0 }) !== JSON.stringify({ ...spec.lora, dropout: 0 })) {
        log(`continuing the adapter in ${spec.startAdapterDir}: r=${lora.r}, alpha=${lora.alpha} on ${lora.targetModules.join(',')} (its own settings)`);
      }
    } catch (e) {
      throw new JobFailure('invalid_model', `The adapter to continue from does not fit ${basename(spec.modelDir)}: ${(e as Error).message}`, 'model');
    }
  }

  const trainer: Trainer = await createTrainer({
    modelDir: spec.modelDir,
    cacheDir: spec.cacheDir,
    lora,
    seed: spec.seed,
    adapter: startAdapter,
    device: spec.device,
    threads: spec.threads,
    log,
  });
  log(`${examples.length} training example(s), ${validation.length} validation example(s); ${microBatchRows} row(s) per micro-batch; device ${trainer.device}`);

  const perEpoch = stepsPerEpoch(examples.length, batchSize);
  const fullValidBatches = microBatchesOf(validation, microBatchRows, contextLength, padTokenId);
  const validOrder = epochOrder(validation.length, spec.seed, 0);
  const sampleSize = Math.min(validation.length, batchSize);
  const metricsOf = (r: { loss: number; accuracy: number }, prefix: 'valid' | 'full_valid'): ValidationMetrics =>
    prefix === 'valid' ? { valid_loss: r.loss, valid_mean_token_accuracy: r.accuracy } : { full_valid_loss: r.loss, full_valid_mean_token_accuracy: r.accuracy };

  return {
    lora,
    baseModelName: basename(spec.modelDir),
    device: trainer.device,
    stepsPerEpoch: perEpoch,
    epochs: nEpochs,

    *steps(from) {
      for (const s of trainSteps(plan, from)) {
        yield {
          epoch: s.epoch,
          step: s.step,
          globalStep: s.globalStep,
          run: async (lr) => {
            const r = await trainer.trainStep(s.microBatches, lr);
            return { metrics: { train_loss: r.loss, train_mean_token_accuracy: r.accuracy }, trainedTokens: s.trainedTokens };
          },
        };
      }
    },

    async sampleValidation(globalStep, totalSteps) {
      if (sampleSize === 0) return null;
      const every = Math.max(1, Math.ceil(totalSteps / VALIDATIONS_PER_RUN));
      if (globalStep % every !== 0 && globalStep !== totalSteps) return null;
      // The k-th sample continues where the previous one stopped in a seeded order, so samples cycle through the file.
      const first = Math.floor(globalStep / every) * sampleSize;
      const sample = Array.from({ length: sampleSize }, (_, j) => validation[validOrder[(first + j) % validation.length]!]!);
      return metricsOf(await trainer.evaluate(microBatchesOf(sample, microBatchRows, contextLength, padTokenId)), 'valid');
    },

    async fullValidation() {
      return fullValidBatches.length === 0 ? null : metricsOf(await trainer.evaluate(fullValidBatches), 'full_valid');
    },

    getState: () => ({ adapter: trainer.getAdapter(), optimizer: trainer.getOptimizerState() }),
    setState(state) {
      trainer.setAdapter(state.adapter);
      trainer.setOptimizerState(state.optimizer);
    },
    close: () => trainer.close(),
  };
}
