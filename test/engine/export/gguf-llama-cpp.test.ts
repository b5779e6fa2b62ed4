// GGUF exports loaded by llama.cpp itself (node-llama-cpp's prebuilt binaries): its next-token distributions, tokenization
// and greedy continuations against localtune's own, for a tiny Llama (byte-level tokenizer, llama 3 rope) and a tiny
// Qwen2 with Qwen's real BPE tokenizer; F16/Q8_0 agreement; the GGUF LoRA adapter on a GGUF base against the merged GGUF.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { getLlama, LlamaLogLevel, readGgufFileInfo, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';
import { exportModel, type ExportDtype, type ExportFormat } from '../../../src/engine/export/export-model.ts';
import { loadAdapter } from '../../../src/engine/lora/peft.ts';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { loadTokenizer } from '../../../src/engine/models/tokenizer.ts';
import { createModelPool, type ModelPool } from '../../../src/engine/serve/model-pool.ts';
import { computeLogits } from '../../../src/engine/train/verify.ts';
import { TINY_LLAMA_CONFIG, TINY_QWEN2_CONFIG, argmax, writeTinyModel, writeTrainedAdapter } from './export-fixtures.ts';

const PROMPTS = [
  '<|im_start|>user\nHow long is the warranty?<|im_end|>\n<|im_start|>assistant\n',
  'The quick brown fox jumps over the lazy dog.',
  'Ünïcödé — 日本語 and emoji 🙂 mixed in',
  "def f(x):\n    return x * 2  # it's 42",
  '   leading spaces, trailing tabs\t\t and 1234567 digits',
];
const GREEDY_TOKENS = 32;
/**
 * An exact (F32) KV cache and no flash attention, so F32 exports are compared without llama.cpp's F16 cache rounding;
 * one thread, as llama.cpp's spinning worker threads slow to a crawl on a shared, loaded machine.
 */
const CONTEXT_OPTIONS = { contextSize: 256, threads: 1, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' } as const;

interface Case {
  name: string;
  config: ModelConfig;
  modelDir: string;
  adapterDir: string;
  /** Prompt token ids, as localtune's tokenizer makes them. */
  prompts: number[][];
}

let root: string;
let llama: Llama;
let pool: ModelPool;
const cases: Record<'llama' | 'qwen2' | 'mistral', Case> = {} as never;

/** A tiny Mistral: sliding window 24 over a 128-token context (GGUF: `llama` with the window; prompts kept inside it). */
const TINY_MISTRAL_CONFIG = { ...TINY_LLAMA_CONFIG, architectures: ['MistralForCausalLM'], rope_scaling: null, max_position_embeddings: 128, sliding_window: 24 };

/** AdamW steps of the case's adapter on the prompts: enough for peaked predictions at nearly every position. */
const ADAPTER_STEPS = 40;

async function setUpCase(name: 'llama' | 'qwen2' | 'mistral', seed: number): Promise<Case> {
  const modelDir = join(root, 'models', name);
  const json = { llama: TINY_LLAMA_CONFIG, qwen2: TINY_QWEN2_CONFIG, mistral: TINY_MISTRAL_CONFIG }[name];
  const config = writeTinyModel(modelDir, json, name === 'qwen2' ? 'qwen' : 'bytes', seed);
  const tokenizer = loadTokenizer(modelDir);
  const prompts = PROMPTS.map((p) => tokenizer.encode(p).slice(0, config.slidingWindow ?? Infinity));
  // Tuned on the prompts it is compared on, as a fine-tuned model is judged on its own domain (see writeTrainedAdapter).
  const adapterDir = join(root, `${name}-adapter`);
  await writeTrainedAdapter(adapterDir, modelDir, join(root, 'cache', name), config, prompts, seed + 1, ADAPTER_STEPS);
  return { name, config, modelDir, adapterDir, prompts };
}

function exportTo(c: Case, format: ExportFormat, dtype: ExportDtype, withAdapter = true): string {
  const out = join(root, `${c.name}-${format}-${dtype}-${withAdapter ? 'tuned' : 'base'}.gguf`);
  exportModel({ modelDir: c.modelDir, adapterDir: withAdapter ? c.adapterDir : null, modelId: c.name, format, dtype, out });
  return out;
}

/** localtune's logits [positions][V] for every prompt (one batch), with the case's adapter; computed once per case. */
const localLogitsCache = new Map<string, Promise<Float32Array[][]>>();
function localLogits(c: Case): Promise<Float32Array[][]> {
  if (!localLogitsCache.has(c.name)) {
    localLogitsCache.set(c.name, (async () => {
      const adapter = loadAdapter(c.adapterDir, c.config);
      const { logits } = await computeLogits({ modelDir: c.modelDir, cacheDir: join(root, 'cache', c.name), tokens: c.prompts, adapter: { lora: adapter.config, tensors: adapter.tensors } });
      const V = c.config.vocabSize;
      return logits.map((rows) => Array.from({ length: rows.length / V }, (_, t) => rows.subarray(t * V, (t + 1) * V)));
    })());
  }
  return localLogitsCache.get(c.name)!;
}

/** How many of llama.cpp's most likely next tokens are compared at each position. */
const TOP_K = 40;

/**
 * llama.cpp's top-K next-token probabilities at every position (temperature 1, renormalised over the K): their log
 * ratios to the top token are logit differences, whatever the normalisation.
 */
async function llamaCppTopK(model: LlamaModel, prompt: number[], lora?: string): Promise<Map<number, number>[]> {
  const context = await model.createContext({
    ...CONTEXT_OPTIONS,
    ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}),
  });
  try {
    const next = { probabilities: true, options: { temperature: 1, topK: TOP_K, topP: 1, minP: 0 } } as const;
    const results = await context.getSequence().controlledEvaluate(prompt.map((t) => [t as Token, { generateNext: next }]));
    return results.map((r) => r!.next.probabilities!);
  } finally {
    await context.dispose();
  }
}

async function llamaCppGreedy(model: LlamaModel, prompt: number[], stopIds: readonly number[]): Promise<number[]> {
  const context = await model.createContext(CONTEXT_OPTIONS);
  try {
    const out: number[] = [];
    for await (const token of context.getSequence().evaluate(prompt as Token[], { temperature: 0 })) {
      out.push(token);
      if (stopIds.includes(token) || out.length === GREEDY_TOKENS) break;
    }
    return out;
  } finally {
    await context.dispose();
  }
}

/**
 * Largest difference, over llama.cpp's top-K tokens, between the two sides' logit gaps to the top token
 * (log p_i − log p_top = ℓ_i − ℓ_top), divided by the range of localtune's logits at that position.
 */
function relativeLogitDiff(local: Float32Array, theirs: Map<number, number>): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of local) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const [top, pTop] = theirs.entries().next().value!;
  let worst = 0;
  for (const [id, p] of theirs) worst = Math.max(worst, Math.abs(Math.log(p / pTop) - (local[id] - local[top])));
  return worst / (hi - lo);
}

/** The gap between the two largest logits, as a fraction of the logit range: how peaked a prediction is. */
function topMargin(logits: Float32Array): number {
  const sorted = Float32Array.from(logits).sort();
  const n = sorted.length;
  return (sorted[n - 1] - sorted[n - 2]) / (sorted[n - 1] - sorted[0]);
}

/**
 * The largest relative logit difference over every position; top-1 agreement over the teacher-forced positions (those
 * whose next token is the prompt's: the adapter was tuned on them; the prompt's last position was not, and is as flat
 * as a random model's), and the median top-1 margin there.
 */
async function compareDistributions(c: Case, gguf: string, lora?: string): Promise<{ relative: number; top1: number; positions: number; medianMargin: number }> {
  const local = await localLogits(c);
  const model = await llama.loadModel({ modelPath: gguf });
  let relative = 0;
  let agree = 0;
  const margins: number[] = [];
  try {
    for (const [i, prompt] of c.prompts.entries()) {
      const theirs = await llamaCppTopK(model, prompt, lora);
      theirs.forEach((probs, t) => {
        relative = Math.max(relative, relativeLogitDiff(local[i][t], probs));
        if (t === prompt.length - 1) return;
        agree += probs.keys().next().value === argmax(local[i][t]) ? 1 : 0;
        margins.push(topMargin(local[i][t]));
      });
    }
  } finally {
    await model.dispose();
  }
  margins.sort((x, y) => x - y);
  return { relative, top1: agree / margins.length, positions: margins.length, medianMargin: margins[margins.length >> 1] };
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'localtune-gguf-'));
  cases.llama = await setUpCase('llama', 11);
  cases.qwen2 = await setUpCase('qwen2', 21);
  cases.mistral = await setUpCase('mistral', 31);
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  pool = createModelPool({ modelsDir: join(root, 'models'), cacheDir: join(root, 'cache'), adapterCacheBytes: 64 << 20, maxBatch: 8, log: () => {} });
});

after(async () => {
  await pool?.close();
  await llama?.dispose();
  rmSync(root, { recursive: true, force: true });
});

for (const name of ['llama', 'qwen2'] as const) {
  describe(`GGUF export of a tiny ${name === 'llama' ? 'Llama (byte-level tokenizer, llama 3 rope)' : 'Qwen2 (Qwen BPE tokenizer, q/k/v bias, tied)'} with an adapter`, () => {
    it('F32: llama.cpp tokenizes like localtune and its distributions match to 1e-3 of the logit range', async () => {
      const c = cases[name];
      const gguf = exportTo(c, 'gguf', 'f32');
      const model = await llama.loadModel({ modelPath: gguf });
      try {
        for (const [i, text] of PROMPTS.entries()) assert.deepEqual(model.tokenize(text, true), c.prompts[i], `tokens of prompt ${i}`);
      } finally {
        await model.dispose();
      }
      const { relative, top1 } = await compareDistributions(c, gguf);
      console.log(`# ${name} F32: max logit difference / logit range ${relative.toExponential(2)}, top-1 agreement ${(top1 * 100).toFixed(1)} %`);
      assert.ok(relative <= 1e-3, `relative difference ${relative}`);
      assert.equal(top1, 1);
    });

    it('F32: greedy continuations of 32 tokens are identical for 5 prompts', async () => {
      const c = cases[name];
      const model = await llama.loadModel({ modelPath: exportTo(c, 'gguf', 'f32') });
      const served = await pool.model(name);
      const adapter = pool.adapter(`${name}-tuned`, c.adapterDir, served);
      try {
        for (const prompt of c.prompts) {
          const ours = await served.scheduler.submit({
            prompt,
            adapter,
            sampling: { temperature: 0, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed: 0 },
            maxTokens: GREEDY_TOKENS,
            stop: [],
          });
          const theirs = await llamaCppGreedy(model, prompt, served.tokenizer.eosTokenIds);
          // Compared up to the first end of generation either side knows: localtune ends at its eos ids (and does not
          // list the one it stopped at); llama.cpp also ends, silently, at tokens it marks end-of-generation by name
          // (<|endoftext|>, which localtune's byte-level tokenizer has as bos, not eos).
          const ends = (id: number) => served.tokenizer.eosTokenIds.includes(id) || model.isEogToken(id as Token);
          const upToEnd = (ids: number[]) => {
            const end = ids.findIndex(ends);
            return end < 0 ? ids : ids.slice(0, end);
          };
          assert.deepEqual(upToEnd(theirs), upToEnd(ours.tokens.map((t) => t.id)));
        }
      } finally {
        await model.dispose();
      }
    });

    // Measured tolerances (README "Export and import"), on the tuned model's peaked predictions. Q4_0 only on the Llama:
    // each export of the Qwen2's 152k-row embedding takes seconds.
    it(`F16${name === 'llama' ? ', Q8_0 and Q4_0 agree' : ' and Q8_0 agree'} with the F32 model within their measured tolerances`, async () => {
      const c = cases[name];
      const bounds = { f16: { relative: 5e-3, top1: 0.98 }, q8_0: { relative: 1e-1, top1: 0.98 }, q4_0: { relative: 0.6, top1: 0.9 } };
      for (const dtype of name === 'llama' ? (['f16', 'q8_0', 'q4_0'] as const) : (['f16', 'q8_0'] as const)) {
        const { relative, top1, positions, medianMargin } = await compareDistributions(c, exportTo(c, 'gguf', dtype));
        console.log(`# ${name} ${dtype}: max logit difference / logit range ${relative.toExponential(2)}, top-1 agreement ${(top1 * 100).toFixed(1)} % of ${positions} positions (median top-1 margin ${medianMargin.toFixed(2)} of the range)`);
        assert.ok(top1 >= bounds[dtype].top1, `${dtype}: top-1 agreement ${top1}`);
        assert.ok(relative <= bounds[dtype].relative, `${dtype}: relative difference ${relative}`);
      }
    });

    it('the GGUF LoRA adapter on the F32 GGUF base answers like the tuned model, as the merged GGUF does', async () => {
      const c = cases[name];
      const { relative, top1 } = await compareDistributions(c, exportTo(c, 'gguf', 'f32', false), exportTo(c, 'gguf-lora', 'f32'));
      console.log(`# ${name} base + GGUF LoRA: max logit difference / logit range ${relative.toExponential(2)}`);
      assert.ok(relative <= 1e-3, `relative difference ${relative}`);
      assert.equal(top1, 1);
    });
  });
}

describe('GGUF export of a tiny Mistral (sliding window) with an adapter', () => {
  it('is a `llama` GGUF carrying the window, whose context is the window, and answers like localtune inside it', async () => {
    const c = cases.mistral;
    const gguf = exportTo(c, 'gguf', 'f32');
    const { metadata } = await readGgufFileInfo(gguf, { readTensorInfo: false });
    const llamaKeys = (metadata as unknown as { llama: { context_length: number; attention: { sliding_window: number } } }).llama;
    assert.equal(metadata.general.architecture, 'llama');
    assert.equal(llamaKeys.attention.sliding_window, 24);
    assert.equal(llamaKeys.context_length, 24);
    const { relative, top1 } = await compareDistributions(c, gguf);
    console.log(`# mistral F32: max logit difference / logit range ${relative.toExponential(2)}, top-1 agreement ${(top1 * 100).toFixed(1)} %`);
    assert.ok(relative <= 1e-3, `relative difference ${relative}`);
    assert.equal(top1, 1);
  });
});
