// Per-file token statistics and the "auto" hyperparameters derived from them, as plain data for the jobs API.
import type { ChatTokenizer, TokenizedExample, TokenizedPreference } from './tokenize-example.ts';
import { tokenizeFile } from './tokenize-file.ts';
import type { TrainingFormat } from './validate.ts';

export interface DatasetStatistics {
  examples: number;
  /** Tokens per example before truncation (a preference example counts its longer sequence, prompt + completion). */
  tokens: { total: number; min: number; mean: number; max: number };
  /** Examples longer than the context length: they are truncated (their end removed), not rejected. */
  truncatedExamples: number;
  contextLength: number;
  /** Tokens with weight 1 after truncation, over one epoch (both completions of a preference example). */
  trainedTokensPerEpoch: number;
  warnings: string[];
}

export type Auto<T> = 'auto' | T;

export interface HyperparametersRequest {
  n_epochs?: Auto<number>;
  batch_size?: Auto<number>;
  learning_rate_multiplier?: Auto<number>;
}

export interface ResolvedHyperparameters {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
}

// The cookbook's estimate of the hosted default: 3 epochs, scaled so examples × epochs lands in [100, 25000].
export const TARGET_EPOCHS = 3;
export const MIN_TARGET_EXAMPLES = 100;
export const MAX_TARGET_EXAMPLES = 25000;
export const MIN_DEFAULT_EPOCHS = 1;
export const MAX_DEFAULT_EPOCHS = 25;

/** Folds tokenized examples into statistics one at a time (bounded memory whatever the file size). */
export class StatisticsAccumulator {
  private examples = 0;
  private total = 0;
  private min = Infinity;
  private max = 0;
  private truncated = 0;
  private trained = 0;

  constructor(private readonly contextLength: number) {}

  add(example: TokenizedExample | TokenizedPreference): void {
    const sequences = 'ids' in example ? [example] : [example.chosen, example.rejected];
    const prompt = 'ids' in example ? 0 : example.promptIds.length;
    const length = prompt + Math.max(...sequences.map((s) => s.ids.length));
    this.examples++;
    this.total += length;
    this.min = Math.min(this.min, length);
    this.max = Math.max(this.max, length);
    if (length > this.contextLength) this.truncated++;
    for (const s of sequences) {
      const kept = Math.max(0, Math.min(s.weights.length, this.contextLength - prompt));
      for (let t = 0; t < kept; t++) this.trained += s.weights[t]!;
    }
  }

  finish(): DatasetStatistics {
    const warnings: string[] = [];
    if (this.truncated > 0) {
      warnings.push(
        `${this.truncated} example(s) are longer than the ${this.contextLength}-token context and will be truncated to it (tokens are removed from the end)`,
      );
    }
    return {
      examples: this.examples,
      tokens: {
        total: this.total,
        min: this.examples === 0 ? 0 : this.min,
        mean: this.examples === 0 ? 0 : this.total / this.examples,
        max: this.max,
      },
      truncatedExamples: this.truncated,
      contextLength: this.contextLength,
      trainedTokensPerEpoch: this.trained,
      warnings,
    };
  }
}

/**
 * "auto" values resolved as the hosted service is documented or observed to:
 * - n_epochs: 3, raised to ⌊100 / n⌋ (≤ 25) for small files and lowered to ⌊25000 / n⌋ (≥ 1) for large ones (cookbook);
 * - batch_size: about 0.2% of the examples, between 1 and 256 (the legacy fine-tunes API's documented default);
 * - learning_rate_multiplier: √batch_size, at most 4 — the square-root scaling rule for Adam-type optimizers,
 *   relative to the engine's base learning rate, which is tuned for batch size 1.
 * Explicit numbers are kept as given.
 */
export function resolveHyperparameters(examples: number, requested: HyperparametersRequest = {}): ResolvedHyperparameters {
  const n = Math.max(1, examples);
  let epochs = TARGET_EPOCHS;
  if (n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES) epochs = Math.min(MAX_DEFAULT_EPOCHS, Math.floor(MIN_TARGET_EXAMPLES / n));
  else if (n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES) epochs = Math.max(MIN_DEFAULT_EPOCHS, Math.floor(MAX_TARGET_EXAMPLES / n));
  const batchSize = isAuto(requested.batch_size) ? Math.min(256, Math.max(1, Math.round(n * 0.002))) : requested.batch_size;
  return {
    n_epochs: isAuto(requested.n_epochs) ? epochs : requested.n_epochs,
    batch_size: batchSize,
    learning_rate_multiplier: isAuto(requested.learning_rate_multiplier)
      ? Math.min(4, Math.sqrt(batchSize))
      : requested.learning_rate_multiplier,
  };
}

function isAuto<T>(value: Auto<T> | undefined): value is 'auto' | undefined {
  return value === undefined || value === 'auto';
}

export interface FileAnalysis {
  statistics: DatasetStatistics;
  hyperparameters: ResolvedHyperparameters;
  /** trainedTokensPerEpoch × n_epochs: the tokens the job will train on (what the hosted API bills as trained_tokens). */
  estimatedTrainedTokens: number;
}

/** Streams a validated file through the tokenizer once and returns its statistics with the resolved hyperparameters. */
export async function analyzeTrainingFile(
  path: string,
  options: { format: TrainingFormat; chat: ChatTokenizer; contextLength: number; hyperparameters?: HyperparametersRequest },
): Promise<FileAnalysis> {
  const accumulator = new StatisticsAccumulator(options.contextLength);
  for await (const example of tokenizeFile(path, options.format, options.chat)) accumulator.add(example);
  const statistics = accumulator.finish();
  const hyperparameters = resolveHyperparameters(statistics.examples, options.hyperparameters);
  return { statistics, hyperparameters, estimatedTrainedTokens: statistics.trainedTokensPerEpoch * hyperparameters.n_epochs };
}
