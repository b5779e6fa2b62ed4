// The one API error class and the one middleware that writes every error as the OpenAI envelope.
import type { ErrorRequestHandler, Request, RequestHandler } from 'express';

/** Statuses we answer with. Never 409: the SDKs retry it; a refused state change is a 400. */
export type ErrorStatus = 400 | 401 | 403 | 404 | 413 | 429 | 500 | 503;

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

const defaultType: Record<ErrorStatus, ErrorType> = {
  400: 'invalid_request_error',
  401: 'invalid_request_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
  500: 'server_error',
  503: 'server_error',
};

export interface ApiErrorOptions {
  type?: ErrorType;
  param?: string | null;
  code?: string | null;
}

/** An error the client should see as `{error:{message,type,param,code}}` with `status`. */
export class ApiError extends Error {
  readonly status: ErrorStatus;
  readonly type: ErrorType;
  readonly param: string | null;
  readonly code: string | null;

  constructor(status: ErrorStatus, message: string, options: ApiErrorOptions = {}) {
    super(message);
    this.status = status;
    this.type = options.type ?? defaultType[status];
    this.param = options.param ?? null;
    this.code = options.code ?? null;
  }

  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, { param, code });

/** The hosted API's wording for an unknown id: `No such File object: file-abc`. */
export const noSuchObject = (kind: string, id: string, param = 'id') =>
  new ApiError(404, `No such ${kind} object: ${id}`, { param });

/** Express catch-all for paths no router answered. */
export const unknownRoute: RequestHandler = (req, _res, next) => {
  next(new ApiError(404, `Unknown request URL: ${req.method} ${req.path}. Please check the URL for typos.`, { code: 'unknown_url' }));
};

/** Maps anything thrown (ApiError, body-parser errors, bugs) to the envelope; multipart.ts words multer's own. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  // body-parser / raw-body errors carry an HTTP status and a `type` tag.
  const e = err as { status?: number; type?: string; message?: string };
  if (e?.type === 'entity.too.large') return new ApiError(413, 'Request body is too large.', { code: 'request_too_large' });
  if (e?.type === 'entity.parse.failed') return badRequest(`We could not parse the JSON body of your request: ${e.message}`, null, 'invalid_json');
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return badRequest(e.message ?? 'Bad request.');
  // busboy rejects broken multipart framing with a plain Error.
  if (err instanceof Error && /^(Multipart|Malformed part header|Unexpected end of form)/.test(err.message)) {
    return badRequest(`Malformed multipart body: ${err.message}.`);
  }
  return new ApiError(500, 'The server had an error while processing your request.');
}

/** Logs a request that failed on the server's side: its id (the client sees it as `x-request-id`), route, model, and the stack. */
export function logRequestFailure(log: (line: string) => void, req: Request, err: unknown): void {
  const model = typeof req.body?.model === 'string' ? ` (model ${req.body.model})` : '';
  log(`[${req.requestId}] ${req.method} ${req.originalUrl}${model} failed: ${(err as Error)?.stack ?? err}`);
}

/** The last middleware: every error as the envelope; server-side failures (5xx) logged. */
export function errorHandler(log: (line: string) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const apiError = toApiError(err);
    if (apiError.status >= 500) logRequestFailure(log, req, err);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(apiError.status).json(apiError.toJSON());
  };
}
