// The one way a training method becomes a run: model and files, micro-batch sizing, starting adapter, trainer, steps,
// loss validation (samples and whole file) and generation-based validation. A method supplies only what differs.
import { stepsPerEpoch, type BatchPlan, type BatchPosition, type Step } from '../../datasets/batches.ts';
import type { ChatTokenizer } from '../../datasets/tokenize-example.ts';
import type { AdapterTrainer, TrainerOptions } from '../../engine/train/trainer.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import { createAnswerValidation, type AnswerTarget } from './answer-validation.ts';
import type { MethodRun, PartialMetrics, ValidationMetrics } from './method.ts';
import { loadMethodModel, readTrainableFiles, startingAdapter, trainerStateOf, validationSchedule, type MethodSetup, type TrainableWords } from './method-inputs.ts';

/** Loss metrics of validation batches; DPO adds how often and by how much the preferred output's reward wins. */
export interface LossEvaluation {
  loss: number;
  accuracy: number;
  rewardAccuracy?: number;
  rewardMargin?: number;
}

/** A method's trainer over its loaded data, as the shared run drives it. */
export interface MethodTrainer<B> {
  /** The engine's trainer: its adapter and optimizer state are what the run saves, restores and validates. */
  trainer: AdapterTrainer;
  /** Settings worth a word in the log (e.g. "beta 0.1"); '' when none. */
  description: string;
  /** One optimizer step; `warning` (if any) becomes a warn event. */
  trainStep(microBatches: B[], lr: number): Promise<{ metrics: PartialMetrics; warning?: string }>;
  /** Loss metrics over micro-batches of validation items (made by the method's validationBatches). */
  evaluate(batches: B[]): Promise<LossEvaluation>;
}

/** The data a method's trainer is made for. */
export interface MethodData<Item> {
  training: Item[];
  validation: Item[];
  microBatchRows: number;
  contextLength: number;
  padTokenId: number;
}

/** What differs between methods: their items, how items become micro-batches, their trainer and their answers. */
export interface MethodKind<Item, B> {
  words: TrainableWords;
  read(path: string, chat: ChatTokenizer): AsyncIterable<Item>;
  /** Whether the item has something to learn within the context (the others are skipped). */
  trainable(item: Item, contextLength: number): boolean;
  microBatchRows(training: Item[], contextLength: number, batchSize: number): number;
  steps(plan: BatchPlan<Item>, from: BatchPosition): Iterable<Step<B>>;
  /** Validation items `indices` as micro-batches. */
  validationBatches(validation: Item[], indices: number[], data: MethodData<Item>): B[];
  /** The prompt and the answer(s) generation-based validation compares with. */
  answerTarget(item: Item): AnswerTarget;
  createTrainer(options: TrainerOptions, data: MethodData<Item>): Promise<MethodTrainer<B>>;
}

function lossMetrics(r: LossEvaluation, prefix: 'valid' | 'full_valid'): ValidationMetrics {
  if (prefix === 'full_valid') return { full_valid_loss: r.loss, full_valid_mean_token_accuracy: r.accuracy };
  return {
    valid_loss: r.loss,
    valid_mean_token_accuracy: r.accuracy,
    ...(r.rewardAccuracy === undefined ? {} : { valid_reward_accuracy: r.rewardAccuracy, valid_reward_margin: r.rewardMargin }),
  };
}

export async function assembleMethodRun<Item, B>(spec: TrainingSpec, log: (line: string) => void, kind: MethodKind<Item, B>): Promise<MethodRun & MethodSetup> {
  const { nEpochs, batchSize } = spec.hyperparameters;
  const model = loadMethodModel(spec);
  const { contextLength, padTokenId } = model;
  const { training, validation } = await readTrainableFiles(
    spec,
    (path) => kind.read(path, model.chat),
    (item) => kind.trainable(item, contextLength),
    kind.words,
    contextLength,
    log,
  );
  const microBatchRows = kind.microBatchRows(training, contextLength, batchSize);
  const data: MethodData<Item> = { training, validation, microBatchRows, contextLength, padTokenId };
  const plan: BatchPlan<Item> = { examples: training, batchSize, microBatchRows, contextLength, seed: spec.seed, epochs: nEpochs, padTokenId };
  const { lora, startAdapter } = startingAdapter(spec, model.model, log);
  const method = await kind.createTrainer({ modelDir: spec.modelDir, cacheDir: spec.cacheDir, lora, seed: spec.seed, adapter: startAdapter, device: spec.device, threads: spec.threads, log }, data);
  log(`${training.length} training and ${validation.length} validation ${kind.words.items}; ${microBatchRows} row(s) per micro-batch; ${method.description ? `${method.description}; ` : ''}device ${method.trainer.device}`);

  const fullValidBatches = kind.validationBatches(validation, Array.from(validation.keys()), data);
  const sampleDue = validationSchedule(validation.length, spec.seed, batchSize);
  const answers = validation.length > 0 ? createAnswerValidation(spec, model, validation.map((item) => kind.answerTarget(item)), log) : null;
  const epochSteps = stepsPerEpoch(training.length, batchSize);
  // Training time per step in this process, for the share of an epoch that answering may take.
  let trainedSeconds = 0;
  let stepsTimed = 0;

  const state = trainerStateOf(method.trainer);
  return {
    lora,
    baseModelName: model.baseModelName,
    device: method.trainer.device,
    stepsPerEpoch: epochSteps,
    epochs: nEpochs,

    *steps(from) {
      for (const s of kind.steps(plan, from)) {
        yield {
          epoch: s.epoch,
          step: s.step,
          globalStep: s.globalStep,
          run: async (lr) => {
            const started = performance.now();
            const r = await method.trainStep(s.microBatches, lr);
            trainedSeconds += (performance.now() - started) / 1000;
            stepsTimed++;
            return { ...r, trainedTokens: s.trainedTokens };
          },
        };
      }
    },

    async sampleValidation(globalStep, totalSteps) {
      const sample = sampleDue(globalStep, totalSteps);
      return sample ? lossMetrics(await method.evaluate(kind.validationBatches(validation, sample, data)), 'valid') : null;
    },

    async epochValidation(epoch) {
      if (fullValidBatches.length === 0 || !answers) return null;
      const loss = lossMetrics(await method.evaluate(fullValidBatches), 'full_valid');
      const epochSeconds = (trainedSeconds / Math.max(1, stepsTimed)) * epochSteps;
      return { ...loss, ...(await answers.evaluate({ lora, tensors: method.trainer.getAdapter() }, epoch, nEpochs, epochSeconds)) };
    },

    ...state,
    async close() {
      await answers?.close();
      await state.close();
    },
  };
}
