// Supervised fine-tuning: chat examples tokenized with the model's template, seeded batches, masked cross-entropy steps.
import { buildMicroBatch, stepsPerEpoch, trainSteps, type BatchPlan } from '../../datasets/batches.ts';
import { tokenizeChatFile } from '../../datasets/tokenize-file.ts';
import type { TokenizedExample } from '../../datasets/tokenize-example.ts';
import type { TrainBatch } from '../../engine/train/batch.ts';
import { createTrainer, type Trainer } from '../../engine/train/trainer.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import type { MethodRun, ValidationMetrics } from './method.ts';
import { hasTrainedToken, loadMethodModel, microBatchRowsFor, readTrainableFiles, startingAdapter, trainerStateOf, validationSchedule, type MethodSetup } from './method-inputs.ts';

/** Micro-batches over `examples` in the given order: grouped by length (least padding), `rows` per micro-batch. */
function microBatchesOf(examples: TokenizedExample[], rows: number, contextLength: number, padTokenId: number): TrainBatch[] {
  const byLength = [...examples].sort((a, b) => a.ids.length - b.ids.length);
  const out: TrainBatch[] = [];
  for (let i = 0; i < byLength.length; i += rows) out.push(buildMicroBatch(byLength.slice(i, i + rows), contextLength, padTokenId));
  return out;
}

export async function prepareSupervised(spec: TrainingSpec, log: (line: string) => void): Promise<MethodRun & MethodSetup> {
  const { nEpochs, batchSize } = spec.hyperparameters;
  const { model, contextLength, chat, padTokenId, baseModelName } = loadMethodModel(spec);

  const { training: examples, validation } = await readTrainableFiles(
    spec,
    (path) => tokenizeChatFile(path, chat),
    (e) => hasTrainedToken(e, contextLength),
    { items: 'example(s)', requirement: 'has an assistant token to train on', truncated: 'examples' },
    contextLength,
    log,
  );

  const microBatchRows = microBatchRowsFor(Math.max(...examples.map((e) => e.ids.length)), contextLength, batchSize);
  const plan: BatchPlan = { examples, batchSize, microBatchRows, contextLength, seed: spec.seed, epochs: nEpochs, padTokenId };
  const { lora, startAdapter } = startingAdapter(spec, model, log);

  const trainer: Trainer = await createTrainer({
    modelDir: spec.modelDir,
    cacheDir: spec.cacheDir,
    lora,
    precision: spec.basePrecision,
    seed: spec.seed,
    adapter: startAdapter,
    device: spec.device,
    threads: spec.threads,
    log,
  });
  log(`${examples.length} training example(s), ${validation.length} validation example(s); ${microBatchRows} row(s) per micro-batch; device ${trainer.device}`);

  const fullValidBatches = microBatchesOf(validation, microBatchRows, contextLength, padTokenId);
  const sampleDue = validationSchedule(validation.length, spec.seed, batchSize);
  const metricsOf = (r: { loss: number; accuracy: number }, prefix: 'valid' | 'full_valid'): ValidationMetrics =>
    prefix === 'valid' ? { valid_loss: r.loss, valid_mean_token_accuracy: r.accuracy } : { full_valid_loss: r.loss, full_valid_mean_token_accuracy: r.accuracy };

  return {
    lora,
    baseModelName,
    device: trainer.device,
    stepsPerEpoch: stepsPerEpoch(examples.length, batchSize),
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
      const sample = sampleDue(globalStep, totalSteps);
      if (!sample) return null;
      return metricsOf(
        await trainer.evaluate(
          microBatchesOf(
            sample.map((k) => validation[k]!),
            microBatchRows,
            contextLength,
            padTokenId,
          ),
        ),
        'valid',
      );
    },

    async fullValidation() {
      return fullValidBatches.length === 0 ? null : metricsOf(await trainer.evaluate(fullValidBatches), 'full_valid');
    },

    ...trainerStateOf(trainer),
  };
}
