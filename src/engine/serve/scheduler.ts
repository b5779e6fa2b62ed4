// Continuous batching over one base model: new requests are prefilled and join the running batch at the next step; every row keeps its own adapter, sampler, stop conditions and KV positions.
import type { ModelRunner, CacheRow } from './model-runner.ts';
import type { PreparedAdapter } from './adapter-cache.ts';
import type { TokenConstraint } from './grammar/grammar-engine.ts';
import { createSampler, tokenLogprobs, type SampledToken, type Sampler, type SamplingParams } from './sampler.ts';
import { createTextStream, type Decoder, type TextStream } from './text-stream.ts';

export type FinishReason = 'stop' | 'length';

export interface GenerationRequest {
  prompt: number[];
  adapter: PreparedAdapter | null;
  sampling: SamplingParams;
  /** Most tokens to generate (generation also stops at the context length); 0 only runs the prompt (scoring). */
  maxTokens: number;
  /** Score the prompt: each prompt token after the first with its log-probability and this many alternatives. */
  promptLogprobs?: number | null;
  /** Called with the scored prompt tokens right after the prompt ran, before any text (streaming). */
  onPrompt?: (scored: SampledToken[]) => void;
  stop: readonly string[];
  /** Called as text becomes final (streaming), with the sampled tokens behind it (logprobs). */
  onText?: (text: string, tokens: SampledToken[]) => void;
  /** Aborting frees the request's batch slot before the next step; the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /**
   * A grammar the tokens must follow (structured outputs): each step samples among the tokens its mask allows. The
   * scheduler owns it from submit() on and releases it when the request ends in any way.
   */
  constraint?: TokenConstraint | null;
}

export interface GenerationResult {
  text: string;
  finishReason: FinishReason;
  /** Sampled tokens behind `text` (an end-of-turn token is counted in completionTokens, not listed). */
  tokens: SampledToken[];
  completionTokens: number;
  /** With promptLogprobs: prompt tokens 1.. scored by the model (token 0 has nothing before it); else null. */
  promptTokens: SampledToken[] | null;
}

export interface SchedulerOptions {
  decoder: Decoder;
  eosTokenIds: readonly number[];
  contextLength: number;
  /** Rows decoded together at most. */
  maxBatch: number;
  /** Prompt tokens prefilled in one run at most (a longer single prompt still runs alone). */
  maxPrefillTokens?: number;
}

export interface Scheduler {
  submit(request: GenerationRequest): Promise<GenerationResult>;
  /** Requests decoding now and waiting for a slot. */
  load(): { active: number; waiting: number };
}

interface Sequence {
  request: GenerationRequest;
  sampler: Sampler;
  stream: TextStream;
  counts: Map<number, number>;
  row: CacheRow | null;
  next: number; // the sampled token to feed at the next step
  generated: number;
  tokens: SampledToken[];
  pending: SampledToken[]; // sampled but not yet reported with text
  promptTokens: SampledToken[] | null;
  cancelled: boolean;
  resolve(r: GenerationResult): void;
  reject(err: Error): void;
}

const abortError = () => Object.assign(new Error('generation aborted'), { name: 'AbortError' });

export function createScheduler(runner: ModelRunner, o: SchedulerOptions): Scheduler {
  const waiting: Sequence[] = [];
  const byRow = new Map<CacheRow, Sequence>();
  const eos = new Set(o.eosTokenIds);
  const maxPrefillTokens = o.maxPrefillTokens ?? 4096;
  let running = false;
  let prefilledLast = false;

  function finish(seq: Sequence, reason: FinishReason, text: string): void {
    if (text || seq.pending.length) seq.request.onText?.(text, seq.pending);
    seq.pending = [];
    seq.request.constraint?.release();
    if (seq.row) {
      byRow.delete(seq.row);
      runner.release(seq.row);
      seq.row = null;
    }
    seq.resolve({ text: seq.stream.text, finishReason: reason, tokens: seq.tokens, completionTokens: seq.generated, promptTokens: seq.promptTokens });
  }

  /** Samples the row's next token from its logits (among those its grammar allows) and takes it. */
  function sample(seq: Sequence, logits: Float32Array, mask: Int32Array | null): void {
    const sampled = seq.sampler.next(logits, seq.counts, mask);
    try {
      seq.request.constraint?.accept(sampled.id);
    } catch (err) {
      // This row's grammar failed; the other rows go on.
      seq.request.constraint?.release();
      if (seq.row) {
        byRow.delete(seq.row);
        runner.release(seq.row);
        seq.row = null;
      }
      return seq.reject(err as Error);
    }
    accept(seq, sampled);
  }

  /** Takes a sampled token: ends the row on an end-of-turn token, a stop string, max_tokens or a full context. */
  function accept(seq: Sequence, sampled: SampledToken): void {
    seq.generated++;
    if (eos.has(sampled.id)) return finish(seq, 'stop', seq.stream.flush());
    seq.tokens.push(sampled);
    seq.pending.push(sampled);
    seq.counts.set(sampled.id, (seq.counts.get(sampled.id) ?? 0) + 1);
    const text = seq.stream.push(sampled.id);
    if (seq.stream.stopped) return finish(seq, 'stop', text);
    if (seq.generated >= seq.request.maxTokens || seq.row!.length >= o.contextLength) return finish(seq, 'length', text + seq.stream.flush());
    if (text) {
      seq.request.onText?.(text, seq.pending);
      seq.pending = [];
    }
    seq.next = sampled.id;
  }

  function dropCancelled(): void {
    for (let i = waiting.length - 1; i >= 0; i--) if (waiting[i].cancelled) waiting.splice(i, 1)[0].request.constraint?.release();
    for (const [row, seq] of byRow) {
      if (!seq.cancelled) continue;
      seq.request.constraint?.release();
      byRow.delete(row);
      runner.release(row);
      seq.row = null;
    }
  }

  async function prefill(): Promise<void> {
    const take: Sequence[] = [];
    let tokens = 0;
    while (waiting.length && byRow.size + take.length < o.maxBatch && (take.length === 0 || tokens + waiting[0].request.prompt.length <= maxPrefillTokens)) {
      const seq = waiting.shift()!;
      tokens += seq.request.prompt.length;
      take.push(seq);
    }
    // Grammar masks are fetched in the same await as the run (onnxruntime-node runs it on this thread, so they add to it).
    const [{ rows, logits, promptLogits }, masks] = await Promise.all([
      runner.prefill(take.map((s) => ({ tokens: s.request.prompt, adapter: s.request.adapter, scored: (s.request.promptLogprobs ?? null) !== null }))),
      nextMasks(take),
    ]);
    take.forEach((seq, i) => {
      seq.row = rows[i];
      byRow.set(rows[i], seq);
      const scored = promptLogits[i];
      const V = logits[i].length;
      if (scored) seq.promptTokens = seq.request.prompt.slice(1).map((id, t) => tokenLogprobs(scored.subarray(t * V, (t + 1) * V), id, seq.request.promptLogprobs!));
    });
    take.forEach((seq, i) => {
      if (seq.cancelled) return;
      if (seq.promptTokens) seq.request.onPrompt?.(seq.promptTokens);
      if (seq.request.maxTokens === 0) return finish(seq, 'length', '');
      sample(seq, logits[i], masks[i]);
    });
  }

  async function decode(): Promise<void> {
    const seqs = runner.rows.map((r) => byRow.get(r)!);
    const [logits, masks] = await Promise.all([runner.decode(seqs.map((s) => s.next)), nextMasks(seqs)]);
    seqs.forEach((seq, i) => (seq.cancelled || !seq.row ? undefined : sample(seq, logits[i], masks[i])));
  }

  /** Each row's grammar mask for its next token (null for free rows). */
  function nextMasks(seqs: Sequence[]): Promise<(Int32Array | null)[]> {
    return Promise.all(seqs.map((s) => s.request.constraint?.nextMask() ?? null));
  }

  /** One prefill or decode run per tick, alternating when both have work, yielding to the event loop in between. */
  async function loop(): Promise<void> {
    try {
      for (;;) {
        dropCancelled();
        const canPrefill = waiting.length > 0 && byRow.size < o.maxBatch;
        if (!canPrefill && byRow.size === 0) break;
        if (canPrefill && !(prefilledLast && byRow.size > 0)) {
          prefilledLast = true;
          await prefill();
        } else {
          prefilledLast = false;
          await decode();
        }
        await new Promise((r) => setImmediate(r));
      }
    } catch (err) {
      for (const seq of [...byRow.values(), ...waiting.splice(0)]) {
        if (seq.row) runner.release(seq.row);
        seq.request.constraint?.release();
        seq.reject(err as Error);
      }
      byRow.clear();
    } finally {
      running = false;
    }
  }

  return {
    submit(request) {
      return new Promise<GenerationResult>((resolve, reject) => {
        const refuse = (err: Error) => {
          request.constraint?.release();
          reject(err);
        };
        if (request.signal?.aborted) return refuse(abortError());
        if (request.prompt.length === 0) return refuse(new Error('the prompt has no tokens'));
        const seq: Sequence = {
          request,
          sampler: createSampler(request.sampling),
          stream: createTextStream(o.decoder, request.stop),
          counts: new Map(),
          row: null,
          next: 0,
          generated: 0,
          tokens: [],
          pending: [],
          promptTokens: null,
          cancelled: false,
          resolve,
          reject,
        };
        request.signal?.addEventListener(
          'abort',
          () => {
            seq.cancelled = true;
            reject(abortError());
          },
          { once: true },
        );
        waiting.push(seq);
        if (!running) {
          running = true;
          void loop();
        }
      });
    },
    load: () => ({ active: byRow.size, waiting: waiting.length }),
  };
}
