// POST /v1/completions (legacy): raw text or token-id prompts, n choices per prompt, `echo`, integer `logprobs`, JSON or SSE.
import { Router } from 'express';
import type { ServedModel } from '../engine/serve/model-pool.ts';
import type { GenerationResult } from '../engine/serve/scheduler.ts';
import type { SampledToken } from '../engine/serve/sampler.ts';
import { newId, nowSeconds } from '../store/ids.ts';
import type { AppContext } from './context.ts';
import { badRequest } from './errors.ts';
import { checkContext, collectResults, disconnectSignal, finishEventStream, maxNewTokens, openEventStream, resolveModel, samplingParams, stopStrings, tokenText } from './generation.ts';
import { validate, type BodyOf } from './validation.ts';

type CompletionRequest = BodyOf<'createCompletion'>;

/** Every prompt form the API accepts, as token ids per prompt. */
function promptIds(served: ServedModel, prompt: CompletionRequest['prompt']): number[][] {
  if (typeof prompt === 'string') return [served.tokenizer.encode(prompt)];
  if (prompt.length === 0) throw badRequest('prompt must not be empty.', 'prompt');
  if (typeof prompt[0] === 'number') return [prompt as number[]];
  return (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? served.tokenizer.encode(p) : p));
}

/** A token as the legacy logprobs object lists it; an echoed prompt's first token has no logprob and no alternatives. */
type LegacyToken = { id: number; logprob: number | null; top: SampledToken['top'] | null };

/** The legacy logprobs object: tokens, their logprobs, top alternatives as {token: logprob}, character offsets from `startOffset`. */
function legacyLogprobs(served: ServedModel, tokens: LegacyToken[], startOffset: number) {
  let offset = startOffset;
  const texts = tokens.map((t) => tokenText(served, t.id).token);
  return {
    tokens: texts,
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => (t.top === null ? null : Object.fromEntries(t.top.map((alt) => [tokenText(served, alt.id).token, alt.logprob])))),
    text_offset: texts.map((s) => {
      const at = offset;
      offset += s.length;
      return at;
    }),
  };
}

/** An echoed prompt's tokens: the first with nothing before it to score it, the others as the model scored them. */
const echoedPrompt = (ids: number[], scored: SampledToken[]): LegacyToken[] => [{ id: ids[0], logprob: null, top: null }, ...scored];

export function completionsRouter(ctx: AppContext): Router {
  const router = Router();
  router.post('/completions', validate('createCompletion'), async (req, res) => {
    const body = req.body as CompletionRequest;
    if (body.suffix) throw badRequest('suffix is not supported by this server.', 'suffix');
    if ((body.best_of ?? 1) > 1) throw badRequest('best_of is not supported by this server; use n for several completions.', 'best_of');
    const { served, adapter } = await resolveModel(ctx, req.project, body.model);
    const prompts = promptIds(served, body.prompt);
    for (const p of prompts) {
      if (p.length === 0) throw badRequest('Each prompt needs at least one token.', 'prompt');
      if (p.some((id) => !Number.isInteger(id) || id < 0 || id >= served.config.vocabSize)) throw badRequest(`Token ids must be in [0, ${served.config.vocabSize}).`, 'prompt');
      checkContext(served, p.length, 'prompt');
    }
    const n = body.n ?? 1;
    const topLogprobs = body.logprobs ?? null;
    const stop = stopStrings(body.stop);
    const signal = disconnectSignal(req, res);
    const head = { id: newId('cmpl-'), created: nowSeconds(), model: body.model, system_fingerprint: `fp_localtune_${served.device}` };
    const promptTexts = prompts.map((p) => served.tokenizer.decode(p));
    const jobs = prompts.flatMap((prompt, p) => Array.from({ length: n }, (_, i) => ({ prompt, p, index: p * n + i })));
    const promptTokens = prompts.reduce((s, p) => s + p.length, 0);
    const usage = (results: GenerationResult[]) => {
      const completion = results.reduce((s, r) => s + r.completionTokens, 0);
      return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
    };
    // echo with logprobs scores the prompt too (how evaluation harnesses compute log-likelihoods, often with max_tokens 0).
    const scorePrompt = body.echo === true && topLogprobs !== null;
    const sampling = samplingParams(body, topLogprobs, served.config.vocabSize);
    const submit = (job: (typeof jobs)[number], on: { text?: (text: string, tokens: SampledToken[]) => void; prompt?: (scored: SampledToken[]) => void } = {}) =>
      served.scheduler.submit({
        prompt: job.prompt,
        adapter,
        sampling: sampling(job.index),
        maxTokens: maxNewTokens(served, job.prompt.length, body.max_tokens ?? 16),
        promptLogprobs: scorePrompt ? topLogprobs : null,
        stop,
        onText: on.text,
        onPrompt: on.prompt,
        signal,
        tag: req.requestId,
      });
    const echo = (job: (typeof jobs)[number]) => (body.echo ? promptTexts[job.p] : '');

    if ((body.max_tokens ?? 16) === 0 && !scorePrompt) {
      // Nothing to generate or score (echo-only requests).
      res.json({ ...head, object: 'text_completion', choices: jobs.map((j) => ({ text: echo(j), index: j.index, logprobs: null, finish_reason: 'length' })), usage: usage([]) });
      return;
    }

    if (!body.stream) {
      const results = await collectResults(jobs.map((j) => submit(j)));
      if (!results) return;
      res.json({
        ...head,
        object: 'text_completion',
        choices: results.map((r, k) => ({
          text: echo(jobs[k]) + r.text,
          index: jobs[k].index,
          logprobs: topLogprobs === null ? null : legacyLogprobs(served, [...(scorePrompt ? echoedPrompt(jobs[k].prompt, r.promptTokens!) : []), ...r.tokens], 0),
          finish_reason: r.finishReason,
        })),
        usage: usage(results),
      });
      return;
    }

    const includeUsage = body.stream_options?.include_usage === true;
    const events = openEventStream(ctx.log, res);
    const chunk = (choice: object) => events.send({ ...head, object: 'text_completion', choices: [choice], ...(includeUsage ? { usage: null } : {}) });
    const choices = Promise.all(
      jobs.map(async (job) => {
        let offset = 0;
        const sendEcho = (logprobs: ReturnType<typeof legacyLogprobs> | null) => {
          chunk({ text: echo(job), index: job.index, logprobs, finish_reason: null });
          offset = logprobs ? logprobs.text_offset.at(-1)! + logprobs.tokens.at(-1)!.length : echo(job).length;
        };
        // A scored prompt is echoed once the model has run it, with its logprobs.
        if (body.echo && !scorePrompt) sendEcho(null);
        const r = await submit(job, {
          prompt: (scored) => sendEcho(legacyLogprobs(served, echoedPrompt(job.prompt, scored), 0)),
          text: (text, tokens) => {
            chunk({ text, index: job.index, logprobs: topLogprobs === null ? null : legacyLogprobs(served, tokens, offset), finish_reason: null });
            offset += text.length;
          },
        });
        chunk({ text: '', index: job.index, logprobs: null, finish_reason: r.finishReason });
        return r;
      }),
    );
    await finishEventStream(events, choices, includeUsage ? (results) => ({ ...head, object: 'text_completion', choices: [], usage: usage(results) }) : undefined);
  });
  return router;
}
