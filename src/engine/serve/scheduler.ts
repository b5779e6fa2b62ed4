// Continuous batching over one base model: new requests are prefilled and join the running batch at the next step; every row keeps its own adapter, sampler, stop conditions and KV positions.
// A failed run fails no request outright that shared it: each of its rows is run again alone, and only one that fails alone is rejected.
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
  /** Names the request in log lines (its HTTP request id). */
  tag?: string;
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

export interface GenerationSchedulerOptions {
  /** The base model's id, for log lines. */
  modelId: string;
  log?: (line: string) => void;
  decoder: Decoder;
  eosTokenIds: readonly number[];
  contextLength: number;
  /** Rows decoded together at most. */
  maxBatch: number;
  /** Prompt tokens prefilled in one run at most (a longer single prompt still runs alone). */
  maxPrefillTokens?: number;
  observe?: GenerationObserver;
}

/** What metrics see: each finished request's tokens and timings, each decode step's batch size. */
export interface GenerationObserver {
  /** `firstTokenMs`: from submit to the first sampled token; `decodeMs`: from then to the last one. */
  finished?(r: { adapter: PreparedAdapter | null; promptTokens: number; completionTokens: number; firstTokenMs: number | null; decodeMs: number }): void;
  decodeStep?(rows: number): void;
}

export interface GenerationScheduler {
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
  /** A run it shared failed: it now runs alone (prefill and decode) until it finishes, and a failure rejects it. */
  alone: boolean;
  submittedAt: number; // performance.now()
  firstTokenAt: number | null;
  resolve(r: GenerationResult): void;
  reject(err: Error): void;
}

const abortError = () => Object.assign(new Error('generation aborted'), { name: 'AbortError' });

export function createGenerationScheduler(runner: ModelRunner, o: GenerationSchedulerOptions): GenerationScheduler {
  const waiting: Sequence[] = [];
  /** Rows of a failed run, each run alone in turn before new requests are admitted again. */
  const retrying: Sequence[] = [];
  const byRow = new Map<CacheRow, Sequence>();
  const eos = new Set(o.eosTokenIds);
  const maxPrefillTokens = o.maxPrefillTokens ?? 4096;
  let running = false;
  let prefilledLast = false;

  /** Frees the request's batch row, if it holds one. */
  function detach(seq: Sequence): void {
    if (!seq.row) return;
    byRow.delete(seq.row);
    runner.release(seq.row);
    seq.row = null;
  }

  function finish(seq: Sequence, reason: FinishReason, text: string): void {
    if (text || seq.pending.length) seq.request.onText?.(text, seq.pending);
    seq.pending = [];
    detach(seq);
    const { adapter, prompt } = seq.request;
    const firstTokenMs = seq.firstTokenAt === null ? null : seq.firstTokenAt - seq.submittedAt;
    o.observe?.finished?.({ adapter, promptTokens: prompt.length, completionTokens: seq.generated, firstTokenMs, decodeMs: seq.firstTokenAt === null ? 0 : performance.now() - seq.firstTokenAt });
    seq.resolve({ text: seq.stream.text, finishReason: reason, tokens: seq.tokens, completionTokens: seq.generated, promptTokens: seq.promptTokens });
  }

  /** Samples the row's next token from its logits, among those its grammar allows; throws if the grammar refuses it. */
  function sample(seq: Sequence, logits: Float32Array, mask: Int32Array | null): SampledToken {
    const sampled = seq.sampler.next(logits, seq.counts, mask);
    seq.request.constraint?.accept(sampled.id);
    return sampled;
  }

  /** Each row's grammar mask for its next token (null for free rows, and cancelled ones, whose matcher is freed). */
  function nextMasks(seqs: Sequence[]): Promise<(Int32Array | null)[]> {
    return Promise.all(seqs.map((s) => (s.cancelled ? null : (s.request.constraint?.nextMask() ?? null))));
  }

  /** Takes a sampled token: ends the row on an end-of-turn token, a stop string, max_tokens or a full context. */
  function accept(seq: Sequence, sampled: SampledToken): void {
    seq.firstTokenAt ??= performance.now();
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

  /** Handles one row's output; a throw there (a caller's callback) fails that request only. */
  function settle(seq: Sequence, handle: () => void): void {
    if (seq.cancelled || !seq.row) return;
    try {
      handle();
    } catch (err) {
      detach(seq);
      seq.reject(err as Error);
    }
  }

  function dropCancelled(): void {
    for (const queue of [waiting, retrying]) for (let i = queue.length - 1; i >= 0; i--) if (queue[i].cancelled) queue.splice(i, 1);
    for (const seq of byRow.values()) if (seq.cancelled) detach(seq);
  }

  /** The tokens a row's cache must hold: the prompt, plus what it generated before a failed run (a retry continues from there). */
  const cachedTokens = (seq: Sequence) => (seq.generated === 0 ? seq.request.prompt : [...seq.request.prompt, ...seq.tokens.map((t) => t.id)]);

  /** Adds `take` to the batch and takes each one's next token; throws only when the runner does. */
  async function prefill(take: Sequence[]): Promise<() => void> {
    // Grammar masks are computed on this thread while the runner's thread runs the model.
    const [{ rows, logits, promptLogits }, masks] = await Promise.all([
      runner.prefill(take.map((s) => ({ tokens: cachedTokens(s), adapter: s.request.adapter, scored: (s.request.promptLogprobs ?? null) !== null && s.generated === 0 }))),
      nextMasks(take),
    ]);
    return () => take.forEach((seq, i) => {
      seq.row = rows[i];
      byRow.set(rows[i], seq);
      settle(seq, () => {
        const scored = promptLogits[i];
        const V = logits[i].length;
        if (scored) seq.promptTokens = seq.request.prompt.slice(1).map((id, t) => tokenLogprobs(scored.subarray(t * V, (t + 1) * V), id, seq.request.promptLogprobs!));
        if (seq.generated === 0) {
          if (seq.promptTokens) seq.request.onPrompt?.(seq.promptTokens);
          if (seq.request.maxTokens === 0) return finish(seq, 'length', '');
        }
        accept(seq, sample(seq, logits[i], masks[i]));
      });
    });
  }

  /** Feeds every row its last token and takes each one's next; throws only when the runner does. */
  async function decode(seqs: Sequence[]): Promise<() => void> {
    o.observe?.decodeStep?.(seqs.length);
    const [logits, masks] = await Promise.all([runner.decode(seqs.map((s) => s.next)), nextMasks(seqs)]);
    return () => seqs.forEach((seq, i) => settle(seq, () => accept(seq, sample(seq, logits[i], masks[i]))));
  }

  /** New requests in arrival order, as many as the batch and the prefill budget take. */
  function admit(): Sequence[] {
    const take: Sequence[] = [];
    let tokens = 0;
    while (waiting.length && byRow.size + take.length < o.maxBatch && (take.length === 0 || tokens + waiting[0].request.prompt.length <= maxPrefillTokens)) {
      const seq = waiting.shift()!;
      tokens += seq.request.prompt.length;
      take.push(seq);
    }
    return take;
  }

  /** What to prefill now: a retried row once the batch has drained (it runs alone), else new requests unless a row runs alone. */
  function nextPrefill(): Sequence[] {
    if (retrying.length) return byRow.size === 0 ? [retrying.shift()!] : [];
    if ([...byRow.values()].some((s) => s.alone)) return [];
    return byRow.size < o.maxBatch ? admit() : [];
  }

  /**
   * A run of `seqs` threw. The runner changed nothing (rows are added only after a prefill succeeds, the cache only after a
   * decode does), so a row that shared the run is released and queued to run again alone from where it was; one that
   * ran alone is rejected. A broken adapter or prompt then fails only its own request.
   */
  function failed(seqs: Sequence[], phase: 'prefill' | 'decode', err: Error): void {
    const live = seqs.filter((s) => !s.cancelled);
    const rejected = live.filter((s) => s.alone || seqs.length === 1);
    const retried = live.filter((s) => !rejected.includes(s));
    const tags = (list: Sequence[]) => list.map((s) => s.request.tag ?? '-').join(', ');
    o.log?.(
      `generation on ${o.modelId}: ${phase} of ${seqs.length} row(s) failed` +
        (rejected.length ? `; failing request(s) ${tags(rejected)}` : '') +
        (retried.length ? `; running request(s) ${tags(retried)} again, each alone` : '') +
        `: ${err.stack ?? err}`,
    );
    seqs.forEach(detach);
    for (const seq of rejected) seq.reject(err);
    for (const seq of retried) seq.alone = true;
    retrying.push(...retried);
  }

  /** One prefill or decode run per tick, alternating when both have work, yielding to the event loop in between. */
  async function loop(): Promise<void> {
    try {
      for (;;) {
        dropCancelled();
        const take = prefilledLast && byRow.size > 0 ? [] : nextPrefill();
        if (take.length === 0 && byRow.size === 0) break;
        prefilledLast = take.length > 0;
        const seqs = take.length ? take : runner.rows.map((r) => byRow.get(r)!);
        const apply = await (take.length ? prefill(take) : decode(seqs)).catch((err: Error) => {
          failed(seqs, take.length ? 'prefill' : 'decode', err);
          return () => {};
        });
        apply();
        await new Promise((r) => setImmediate(r));
      }
    } catch (err) {
      // A bug of the scheduler itself: fail what it holds rather than leave requests hanging.
      o.log?.(`generation on ${o.modelId}: scheduler failed: ${(err as Error).stack ?? err}`);
      for (const seq of [...byRow.values(), ...waiting.splice(0), ...retrying.splice(0)]) {
        detach(seq);
        seq.reject(err as Error);
      }
    } finally {
      running = false;
    }
  }

  return {
    submit(request) {
      return new Promise<GenerationResult>((resolve, reject) => {
        // However the request ends, its grammar matcher is freed.
        const end = <T>(settle: (value: T) => void) => (value: T) => {
          request.constraint?.release();
          settle(value);
        };
        if (request.signal?.aborted) return end(reject)(abortError());
        if (request.prompt.length === 0) return end(reject)(new Error('the prompt has no tokens'));
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
          alone: false,
          submittedAt: performance.now(),
          firstTokenAt: null,
          resolve: end(resolve),
          reject: end(reject),
        };
        request.signal?.addEventListener(
          'abort',
          () => {
            seq.cancelled = true;
            seq.reject(abortError());
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
