// A small client for a running localtune server's /v1 API, used by `localtune jobs …`, `export`, `models import` and `demo`.
// Plain fetch rather than the openai SDK: the SDK is a dev dependency, and these commands need only a few routes.
import { ConfigError } from '../config.ts';
import { takeOption } from './options.ts';

export interface ApiClient {
  /** `http://host:port/v1` */
  readonly baseURL: string;
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
  /** Uploads `content` as a file named `filename` with the given purpose (multipart, like the SDKs). */
  upload<T>(filename: string, content: string, purpose: string): Promise<T>;
  /** POSTs a multipart form (text fields and files) and returns the JSON answer. */
  postForm<T>(path: string, form: FormData): Promise<T>;
  /** GETs a binary answer (a download) as the response whose body is still to be read. */
  download(path: string): Promise<Response>;
}

/** An error answer from the server, with the envelope's fields. */
export class ApiRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
    readonly param: string | null,
  ) {
    super(message);
  }
}

export const DEFAULT_BASE_URL = 'http://127.0.0.1:8000/v1';

export const CONNECTION_USAGE = `  --base-url URL   the server's /v1 URL (env OPENAI_BASE_URL; default ${DEFAULT_BASE_URL})
  --api-key KEY    an API key (env OPENAI_API_KEY; any value works while the server has no keys)`;

/** Takes `--base-url` and `--api-key` out of args (falling back to OPENAI_BASE_URL / OPENAI_API_KEY, as the SDKs do). */
export function clientFromArgs(args: string[], env: NodeJS.ProcessEnv = process.env): ApiClient {
  const baseURL = takeOption(args, '--base-url') ?? (env.OPENAI_BASE_URL || DEFAULT_BASE_URL);
  const apiKey = takeOption(args, '--api-key') ?? (env.OPENAI_API_KEY || 'localtune');
  return createApiClient(baseURL, apiKey);
}

export function createApiClient(baseURL: string, apiKey: string): ApiClient {
  const root = baseURL.replace(/\/+$/, '');
  if (!/^https?:\/\//.test(root)) throw new ConfigError(`--base-url: '${baseURL}' is not an http(s) URL`);
  /** The server's response to a request; an error answer becomes an ApiRequestError, an unreachable server a ConfigError. */
  const send = async (method: string, path: string, body?: BodyInit, contentType?: string): Promise<Response> => {
    const headers: Record<string, string> = { authorization: `Bearer ${apiKey}` };
    if (contentType) headers['content-type'] = contentType;
    let res: Response;
    try {
      res = await fetch(`${root}${path}`, { method, headers, body });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new ConfigError(`cannot reach ${root} (${cause}): is \`localtune serve\` running there? (set --base-url or OPENAI_BASE_URL)`);
    }
    if (!res.ok) {
      const text = await res.text();
      const e = (text.startsWith('{') ? (JSON.parse(text) as { error?: { message?: string; code?: string; param?: string } }) : null)?.error;
      throw new ApiRequestError(res.status, `${method} ${path}: ${res.status} ${e?.message ?? text}`, e?.code ?? null, e?.param ?? null);
    }
    return res;
  };
  const request = async <T>(method: string, path: string, body?: BodyInit, contentType?: string): Promise<T> => {
    const text = await (await send(method, path, body, contentType)).text();
    return (text ? JSON.parse(text) : null) as T;
  };
  return {
    baseURL: root,
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body === undefined ? undefined : JSON.stringify(body), body === undefined ? undefined : 'application/json'),
    upload: (filename, content, purpose) => {
      const form = new FormData();
      form.append('purpose', purpose);
      form.append('file', new Blob([content]), filename);
      return request('POST', '/files', form);
    },
    postForm: (path, form) => request('POST', path, form),
    download: (path) => send('GET', path),
  };
}
