// What chat and legacy completions share: model id → served base model + adapter (through the model catalog), sampling settings, SSE, disconnects.
import type { Request, Response } from 'express';
import { randomInt } from 'node:crypto';
import type { PreparedAdapter } from '../engine/serve/adapter-cache.ts';
import type { ServedModel } from '../engine/serve/model-pool.ts';
import type { SampledToken, SamplingParams } from '../engine/serve/sampler.ts';
import type { AppContext } from './context.ts';
import { ApiError, badRequest, logRequestFailure, toApiError } from './errors.ts';

/** The hosted API's 404 for a model the caller cannot use. */
export const modelNotFound = (id: string) =>
  new ApiError(404, `The model \`${id}\` does not exist or you do not have access to it.`, { param: 'model', code: 'model_not_found' });

export interface ResolvedModel {
  served: ServedModel;
  adapter: PreparedAdapter | null;
}

/** Resolves `id` for `project`: a base model, an `ft:` model / checkpoint of the project (its adapter loaded on first use), or an alias of either. */
export async function resolveModel(ctx: AppContext, project: string, id: string): Promise<ResolvedModel> {
  const model = await ctx.catalog.find(project, id);
  if (!model) throw modelNotFound(id);
  // An ft: model is served on the base precision it was trained on (its adapter was fitted to those weights).
  const served = await ctx.models.model(model.baseModel, model.kind === 'fine-tuned' ? model.row.base_precision : undefined);
  return { served, adapter: model.kind === 'fine-tuned' ? ctx.models.adapter(model.id, await ctx.catalog.adapterDirOf(model.row), served) : null };
}

/** The request fields both endpoints read. */
export interface SamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  stop?: string | string[] | null;
}

/**
 * Checks the request's sampling fields (a 400 before anything streams) and returns the settings of choice `index`:
 * with a seed, choice i draws from seed + i (reproducible, yet the n choices differ); without one, from a fresh random seed.
 */
export function samplingParams(body: SamplingFields, topLogprobs: number | null, vocabSize: number): (index: number) => SamplingParams {
  const bias = new Map<number, number>();
  for (const [k, v] of Object.entries(body.logit_bias ?? {})) {
    if (!/^\d+$/.test(k) || Number(k) >= vocabSize) throw badRequest(`Invalid key in 'logit_bias': ${JSON.stringify(k)} is not a token id of this model (0 to ${vocabSize - 1}).`, 'logit_bias');
    bias.set(Number(k), v);
  }
  return (index) => ({
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    presencePenalty: body.presence_penalty ?? 0,
    frequencyPenalty: body.frequency_penalty ?? 0,
    logitBias: bias,
    topLogprobs,
    seed: body.seed !== undefined && body.seed !== null ? (body.seed + index) | 0 : randomInt(2 ** 31),
  });
}

export function stopStrings(stop: SamplingFields['stop']): string[] {
  if (stop === null || stop === undefined) return [];
  return (typeof stop === 'string' ? [stop] : stop).filter((s) => s.length > 0);
}

/** 400 when the prompt leaves no room for a single generated token. */
export function checkContext(served: ServedModel, promptTokens: number, param: string): void {
  if (promptTokens < served.contextLength) return;
  throw badRequest(
    `This model's maximum context length is ${served.contextLength} tokens. However, your ${param} resulted in ${promptTokens} tokens. Please reduce the length of the ${param}.`,
    param,
    'context_length_exceeded',
  );
}

/** Tokens to generate at most: the request's limit, never past the context. */
export function maxNewTokens(served: ServedModel, promptTokens: number, requested: number | null | undefined): number {
  return Math.min(requested ?? Infinity, served.contextLength - promptTokens);
}

/** An AbortSignal that fires when the client goes away before the response is finished. */
export function disconnectSignal(req: Request, res: Response): AbortSignal {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  req.on('aborted', () => controller.abort());
  return controller.signal;
}

export const isAbort = (err: unknown) => (err as Error)?.name === 'AbortError';

/** The results of a non-streamed request's generations; null when the client went away (nobody is left to answer). */
export async function collectResults<T>(generations: Promise<T>[]): Promise<T[] | null> {
  try {
    return await Promise.all(generations);
  } catch (err) {
    if (isAbort(err)) return null;
    throw err;
  }
}

/** Server-sent events in the hosted format: `data: <json>\n\n` per event, `data: [DONE]` last. */
export function openEventStream(log: (line: string) => void, res: Response) {
  res.status(200);
  res.setHeader('content-type', 'text/event-stream; charset=utf-8');
  res.setHeader('cache-control', 'no-cache');
  res.setHeader('connection', 'keep-alive');
  res.flushHeaders();
  return {
    send: (data: unknown) => void res.write(`data: ${JSON.stringify(data)}\n\n`),
    /** A failure after the headers went out: an `error` event the SDKs raise as APIError, and a log line (no status code will show it). */
    fail: (err: unknown) => {
      logRequestFailure(log, res.req, err);
      res.write(`data: ${JSON.stringify(toApiError(err).toJSON())}\n\n`);
    },
    done: () => res.end('data: [DONE]\n\n'),
  };
}

export type EventStream = ReturnType<typeof openEventStream>;

/**
 * Ends a stream once `choices` (which send their own chunks) settle: the `last` event (usage) when given, then
 * [DONE]. A failure becomes an error event; a client that went away ends it quietly.
 */
export async function finishEventStream<T>(events: EventStream, choices: Promise<T>, last?: (result: T) => unknown): Promise<void> {
  try {
    const result = await choices;
    if (last) events.send(last(result));
  } catch (err) {
    if (isAbort(err)) return;
    events.fail(err);
  }
  events.done();
}

/** A token's text and UTF-8 bytes for logprobs. */
export function tokenText(served: ServedModel, id: number): { token: string; bytes: number[] } {
  const token = served.tokenizer.decode([id]);
  return { token, bytes: [...Buffer.from(token, 'utf8')] };
}

export function chatLogprobs(served: ServedModel, tokens: SampledToken[]) {
  return tokens.map((t) => ({
    ...tokenText(served, t.id),
    logprob: t.logprob,
    top_logprobs: t.top.map((alt) => ({ ...tokenText(served, alt.id), logprob: alt.logprob })),
  }));
}
