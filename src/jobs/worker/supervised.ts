// Supervised fine-tuning: chat examples tokenized with the model's template, seeded batches, masked cross-entropy steps.
import { buildMicroBatch, trainSteps } from '../../datasets/batches.ts';
import { tokenizeChatFile } from '../../datasets/tokenize-file.ts';
import type { TokenizedExample } from '../../datasets/tokenize-example.ts';
import type { TrainBatch } from '../../engine/train/batch.ts';
import { createTrainer } from '../../engine/train/trainer.ts';
import type { TrainingSpec } from '../worker-protocol.ts';
import { chatAnswerTarget } from './answer-validation.ts';
import type { MethodRun } from './method.ts';
import { hasTrainedToken, microBatchRowsFor, type MethodSetup } from './method-inputs.ts';
import { assembleMethodRun } from './method-run.ts';

/** Micro-batches over `examples` in the given order: grouped by length (least padding), `rows` per micro-batch. */
function microBatchesOf(examples: TokenizedExample[], rows: number, contextLength: number, padTokenId: number): TrainBatch[] {
  const byLength = [...examples].sort((a, b) => a.ids.length - b.ids.length);
  const out: TrainBatch[] = [];
  for (let i = 0; i < byLength.length; i += rows) out.push(buildMicroBatch(byLength.slice(i, i + rows), contextLength, padTokenId));
  return out;
}

export function prepareSupervised(spec: TrainingSpec, log: (line: string) => void): Promise<MethodRun & MethodSetup> {
  return assembleMethodRun<TokenizedExample, TrainBatch>(spec, log, {
    words: { items: 'example(s)', requirement: 'has an assistant token to train on', truncated: 'examples' },
    read: tokenizeChatFile,
    trainable: hasTrainedToken,
    microBatchRows: (examples, contextLength, batchSize) => microBatchRowsFor(Math.max(...examples.map((e) => e.ids.length)), contextLength, batchSize),
    steps: trainSteps,
    validationBatches: (validation, indices, d) => microBatchesOf(indices.map((k) => validation[k]!), d.microBatchRows, d.contextLength, d.padTokenId),
    answerTarget: chatAnswerTarget,
    async createTrainer(options) {
      const trainer = await createTrainer(options);
      return {
        trainer,
        description: '',
        async trainStep(microBatches, lr) {
          const r = await trainer.trainStep(microBatches, lr);
          return { metrics: { train_loss: r.loss, train_mean_token_accuracy: r.accuracy } };
        },
        evaluate: (batches) => trainer.evaluate(batches),
      };
    },
  });
}
