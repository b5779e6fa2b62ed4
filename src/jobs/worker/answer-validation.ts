// Generation-based validation: at each epoch end the job answers validation prompts greedily with its current adapter
// (through the serving path) and scores the answers against the references, within a share of the job's time.
import { epochOrder } from '../../datasets/shuffle.ts';
import type { TokenizedExample, TokenizedPreference } from '../../datasets/tokenize-example.ts';
import type { LoraConfig } from '../../engine/lora/config.ts';
import type { AdapterTensors } from '../../engine/lora/init.ts';
import { createGreedyAnswerer, type GreedyAnswerer } from '../../engine/serve/greedy-answers.ts';
import type { AnswerSample, TrainingSpec } from '../worker-protocol.ts';
import { chrF, exactMatch } from './answer-metrics.ts';
import type { ValidationMetrics } from './method.ts';
import type { MethodModel } from './method-inputs.ts';

/** Share of the training time that answering validation prompts may take. */
export const ANSWER_TIME_SHARE = 0.1;
/** Prompts decoded together: on a CPU a decode step costs about the same for 1 or 8 rows, so answers come in batches of this. */
export const ANSWER_BATCH = 8;
/** Prompts answered per evaluation at most, however cheap answers are. */
export const MAX_ANSWERED = 64;
/** Samples (prompt, reference, answer) each evaluation reports. */
export const ANSWER_SAMPLES = 3;

/** A validation item as answering sees it: the prompt, the answer it should get and (DPO) the one it should not. */
export interface AnswerTarget {
  prompt: Int32Array;
  reference: Int32Array;
  rejected: Int32Array | null;
}

/** The tokens with weight 1 at the end of `e` (its last trained assistant message) and the prompt before them. */
export function chatAnswerTarget(e: TokenizedExample): AnswerTarget {
  let end = e.weights.length;
  while (end > 0 && e.weights[end - 1] !== 1) end--;
  let start = end;
  while (start > 0 && e.weights[start - 1] === 1) start--;
  return { prompt: e.ids.subarray(0, start), reference: e.ids.subarray(start, end), rejected: null };
}

const trained = (e: TokenizedExample) => e.ids.filter((_, i) => e.weights[i] === 1);

export function preferenceAnswerTarget(p: TokenizedPreference): AnswerTarget {
  return { prompt: p.promptIds, reference: trained(p.chosen), rejected: trained(p.rejected) };
}

export interface AnswerValidation {
  /**
   * At the end of epoch `epoch` (1-based) of `epochs`: the scores of greedy answers under `adapter` to the first N
   * prompts of a seeded order, or null when this epoch end is skipped. The first call answers one batch
   * (ANSWER_BATCH prompts) and times it against `epochSeconds` of training: when a batch fits in ANSWER_TIME_SHARE of
   * an epoch, every epoch end answers as many batches as fit (N ≤ MAX_ANSWERED); otherwise one batch every k-th epoch
   * end, k the smallest that keeps the share. The last epoch end always answers.
   */
  evaluate(adapter: { lora: LoraConfig; tensors: AdapterTensors }, epoch: number, epochs: number, epochSeconds: number): Promise<ValidationMetrics | null>;
  close(): Promise<void>;
}

export function createAnswerValidation(spec: TrainingSpec, m: MethodModel, targets: AnswerTarget[], log: (line: string) => void): AnswerValidation {
  const order = Array.from(epochOrder(targets.length, spec.seed, 0));
  const decode = (ids: Int32Array) => m.chat.tokenizer.decode(ids, { skipSpecialTokens: true });
  const references = targets.map((t) => ({ text: decode(t.reference), rejected: t.rejected && decode(t.rejected) }));
  let answerer: Promise<GreedyAnswerer> | null = null;
  /** Fixed at the first evaluation of this process: prompts per evaluation, and epochs between evaluations. */
  let plan: { count: number; every: number; firstEpoch: number } | null = null;

  // An answer that runs past the reference's length (its end-of-turn included) can no longer match it: stop soon after.
  const prompt = (k: number) => {
    const t = targets[k]!;
    return { prompt: t.prompt, maxTokens: Math.max(t.reference.length, t.rejected?.length ?? 0) + 4 };
  };

  return {
    async evaluate(adapter, epoch, epochs, epochSeconds) {
      if (plan && epoch !== epochs && (epoch - plan.firstEpoch) % plan.every !== 0) return null;
      answerer ??= createGreedyAnswerer({
        modelDir: spec.modelDir, cacheDir: spec.cacheDir, config: m.model.config, contextLength: m.contextLength, tokenizer: m.chat.tokenizer,
        maxBatch: ANSWER_BATCH, device: spec.device, threads: spec.threads, log,
      });
      const a = await answerer;
      const first = order.slice(0, Math.min(ANSWER_BATCH, order.length));
      const started = performance.now();
      const answers = await a.answer(first.map(prompt), adapter);
      if (!plan) {
        const batchSeconds = (performance.now() - started) / 1000;
        const budget = ANSWER_TIME_SHARE * epochSeconds;
        const batches = Math.floor(budget / batchSeconds);
        plan = batches >= 1
          ? { count: Math.max(first.length, Math.min(order.length, MAX_ANSWERED, batches * ANSWER_BATCH)), every: 1, firstEpoch: epoch }
          : { count: first.length, every: Math.ceil(batchSeconds / budget), firstEpoch: epoch };
        log(`answer validation: ${plan.count} of ${order.length} validation prompt(s) every ${plan.every === 1 ? '' : `${plan.every} `}epoch end(s) and at the last (${batchSeconds.toFixed(2)} s per batch of ${first.length}, ${epochSeconds.toFixed(1)} s of training per epoch)`);
      }
      const rest = order.slice(first.length, plan.count);
      if (rest.length) answers.push(...(await a.answer(rest.map(prompt), adapter)));

      const answered = order.slice(0, plan.count);
      const mean = (f: (answer: string, k: number) => number) => answered.reduce((sum, k, i) => sum + f(answers[i]!, k), 0) / answered.length;
      const metrics: ValidationMetrics = {
        valid_exact_match: mean((answer, k) => (exactMatch(answer, references[k]!.text) ? 1 : 0)),
        valid_answer_similarity: mean((answer, k) => chrF(answer, references[k]!.text)),
      };
      if (references.some((r) => r.rejected !== null)) {
        metrics.valid_closer_to_preferred = mean((answer, k) => (chrF(answer, references[k]!.text) > chrF(answer, references[k]!.rejected ?? '') ? 1 : 0));
      }
      const samples: AnswerSample[] = answered.slice(0, ANSWER_SAMPLES).map((k, i) => ({ prompt: decode(targets[k]!.prompt).trim(), reference: references[k]!.text, answer: answers[i]! }));
      return { ...metrics, valid_samples: samples };
    },
    async close() {
      await (await answerer)?.close();
    },
  };
}
