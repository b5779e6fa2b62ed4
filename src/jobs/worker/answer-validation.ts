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

/** Share of the training time that answering validation prompts may take (measured at the first epoch end). */
export const ANSWER_TIME_SHARE = 0.1;
/** Prompts answered at the first epoch end to time an answer (all of them when fewer); also the samples each checkpoint shows. */
export const ANSWER_SAMPLES = 3;
/** Prompts answered per epoch end at most, however cheap answers are. */
export const MAX_ANSWERED = 64;
/** Prompts decoded together. */
const ANSWER_BATCH = 8;

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
   * Answers the first N prompts of a seeded order under `adapter` and scores them. N is fixed at the first call: the
   * first ANSWER_SAMPLES answers are timed and N is what fits ANSWER_TIME_SHARE of `epochSeconds` (at least those, at
   * most MAX_ANSWERED and the number of prompts).
   */
  evaluate(adapter: { lora: LoraConfig; tensors: AdapterTensors }, epochSeconds: number): Promise<ValidationMetrics>;
  close(): Promise<void>;
}

export function createAnswerValidation(spec: TrainingSpec, m: MethodModel, targets: AnswerTarget[], log: (line: string) => void): AnswerValidation {
  const order = Array.from(epochOrder(targets.length, spec.seed, 0));
  const decode = (ids: Int32Array) => m.chat.tokenizer.decode(ids, { skipSpecialTokens: true });
  const references = targets.map((t) => ({ text: decode(t.reference), rejected: t.rejected && decode(t.rejected) }));
  let answerer: Promise<GreedyAnswerer> | null = null;
  let count: number | null = null;

  // An answer longer than its reference by half cannot match it and scores lower the longer it runs: stop there.
  const prompt = (k: number) => {
    const t = targets[k]!;
    return { prompt: t.prompt, maxTokens: Math.ceil(1.5 * Math.max(t.reference.length, t.rejected?.length ?? 0)) + 8 };
  };

  return {
    async evaluate(adapter, epochSeconds) {
      answerer ??= createGreedyAnswerer({
        modelDir: spec.modelDir, cacheDir: spec.cacheDir, config: m.model.config, contextLength: m.contextLength, tokenizer: m.chat.tokenizer,
        maxBatch: ANSWER_BATCH, device: spec.device, threads: spec.threads, log,
      });
      const a = await answerer;
      const first = order.slice(0, Math.min(ANSWER_SAMPLES, order.length));
      const started = performance.now();
      const answers = await a.answer(first.map(prompt), adapter);
      if (count === null) {
        const perAnswer = (performance.now() - started) / 1000 / Math.max(1, first.length);
        count = Math.max(first.length, Math.min(order.length, MAX_ANSWERED, Math.floor((ANSWER_TIME_SHARE * epochSeconds) / perAnswer)));
        log(`answer validation: ${count} of ${order.length} validation prompt(s) per epoch end (${perAnswer.toFixed(3)} s per answer, ${epochSeconds.toFixed(1)} s per epoch)`);
      }
      const rest = order.slice(first.length, count);
      answers.push(...(rest.length ? await a.answer(rest.map(prompt), adapter) : []));

      const answered = order.slice(0, count);
      const mean = (f: (answer: string, k: number) => number) => answered.reduce((s, k, i) => s + f(answers[i]!, k), 0) / answered.length;
      const metrics: ValidationMetrics = {
        valid_exact_match: mean((answer, k) => (exactMatch(answer, references[k]!.text) ? 1 : 0)),
        valid_answer_similarity: mean((answer, k) => chrF(answer, references[k]!.text)),
      };
      if (references.some((r) => r.rejected !== null)) {
        metrics.valid_closer_to_preferred = mean((answer, k) => (chrF(answer, references[k]!.text) > chrF(answer, references[k]!.rejected ?? '') ? 1 : 0));
      }
      const samples: AnswerSample[] = first.map((k, i) => ({ prompt: decode(targets[k]!.prompt).trim(), reference: references[k]!.text, answer: answers[i]! }));
      return { ...metrics, valid_samples: samples };
    },
    async close() {
      await (await answerer)?.close();
    },
  };
}
