// Server configuration: defaults, overridden by LOCALTUNE_* environment variables, overridden by CLI flags.
import { resolve, join } from 'node:path';

export interface Config {
  host: string;
  port: number;
  /** Root of everything the server stores: db.sqlite, files/, adapters/, cache/ (with PostgreSQL: this node's caches and temp files). */
  dataDir: string;
  /** `postgres://…`: share metadata, queue and blobs with every node using the same database; undefined: the data directory's SQLite. */
  databaseUrl: string | undefined;
  /** This node's name in the job queue; undefined: host name, role and data directory. */
  nodeId: string | undefined;
  /** Seconds a node holds a job it stopped renewing (it died) before another node takes the job over. */
  jobLeaseSeconds: number;
  /** Whether this process validates and trains jobs (false: `serve --no-training`, API and serving only). */
  training: boolean;
  /** Base models (built-in and user-provided Hugging Face directories). */
  modelsDir: string;
  /** Largest accepted upload, in bytes (the hosted API's limit is 512 MB). */
  maxUploadBytes: number;
  /** Largest accepted JSON request body, in bytes. */
  maxJsonBytes: number;
  /** Keys given in the environment or on the command line, besides those made by `localtune keys create`. */
  apiKeys: ApiKeyGrant[];
  /** Memory for served LoRA adapters kept loaded (least recently used evicted first), in bytes. */
  adapterCacheBytes: number;
  /** Requests one base model decodes together at most (continuous batching). */
  maxBatch: number;
  /** Fine-tuning jobs trained at the same time; more wait in the queue. */
  maxConcurrentJobs: number;
  /** The learning rate a `learning_rate_multiplier` of 1 means. */
  baseLearningRate: number;
  /** Seconds between a training job's resume points (optimizer state + data position), which crash recovery restarts from. */
  resumePointSeconds: number;
  /** Intra-op threads per training job; undefined: all cores, shared evenly when several jobs run at once. */
  trainThreads: number | undefined;
  /** Model names that stand for a local base model, so scripts written for the hosted API run unchanged. */
  modelAliases: Map<string, string>;
  /** The precision base models are served at (ft: models use the one they were trained on); auto: fp32 when it fits comfortably, else int4. */
  basePrecision: 'auto' | 'fp32' | 'nf4' | 'int4' | 'int8';
}

export interface ApiKeyGrant {
  project: string;
  key: string;
}

const MB = 1024 * 1024;

/** One row per setting: flag name, environment variable, how to parse it. */
const settings = {
  host: { flag: '--host', env: 'LOCALTUNE_HOST', parse: parseString },
  port: { flag: '--port', env: 'LOCALTUNE_PORT', parse: parsePort },
  dataDir: { flag: '--data-dir', env: 'LOCALTUNE_DATA_DIR', parse: parsePath },
  databaseUrl: { flag: '--database-url', env: 'LOCALTUNE_DATABASE_URL', parse: parseDatabaseUrl },
  nodeId: { flag: '--node-id', env: 'LOCALTUNE_NODE_ID', parse: parseString },
  jobLeaseSeconds: { flag: '--job-lease-seconds', env: 'LOCALTUNE_JOB_LEASE_SECONDS', parse: parsePositiveNumber },
  training: { flag: '--training', env: 'LOCALTUNE_TRAINING', parse: parseBoolean },
  modelsDir: { flag: '--models-dir', env: 'LOCALTUNE_MODELS_DIR', parse: parsePath },
  maxUploadBytes: { flag: '--max-upload-mb', env: 'LOCALTUNE_MAX_UPLOAD_MB', parse: parseMegabytes },
  maxJsonBytes: { flag: '--max-json-mb', env: 'LOCALTUNE_MAX_JSON_MB', parse: parseMegabytes },
  apiKeys: { flag: '--api-keys', env: 'LOCALTUNE_API_KEYS', parse: parseApiKeys },
  adapterCacheBytes: { flag: '--adapter-cache-mb', env: 'LOCALTUNE_ADAPTER_CACHE_MB', parse: parseMegabytes },
  maxBatch: { flag: '--max-batch', env: 'LOCALTUNE_MAX_BATCH', parse: parsePositiveInt },
  maxConcurrentJobs: { flag: '--max-concurrent-jobs', env: 'LOCALTUNE_MAX_CONCURRENT_JOBS', parse: parsePositiveInt },
  baseLearningRate: { flag: '--base-learning-rate', env: 'LOCALTUNE_BASE_LEARNING_RATE', parse: parsePositiveNumber },
  resumePointSeconds: { flag: '--resume-point-seconds', env: 'LOCALTUNE_RESUME_POINT_SECONDS', parse: parsePositiveNumber },
  trainThreads: { flag: '--train-threads', env: 'LOCALTUNE_TRAIN_THREADS', parse: parsePositiveInt },
  modelAliases: { flag: '--model-aliases', env: 'LOCALTUNE_MODEL_ALIASES', parse: parseModelAliases },
  basePrecision: { flag: '--base-precision', env: 'LOCALTUNE_BASE_PRECISION', parse: parseBasePrecision },
} as const;

export type SettingName = keyof typeof settings;

/** The flags `loadConfig` understands, for usage text. */
export const configFlags = Object.values(settings).map((s) => `${s.flag} (${s.env})`);

export class ConfigError extends Error {}

/**
 * Builds the configuration from `argv` (flags such as `--port 9000` or `--port=9000`) and `env`.
 * Flags win over environment variables; unknown flags are an error so typos do not pass silently.
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Config {
  const flags = parseFlags(argv);
  const pick = <K extends SettingName>(name: K): ReturnType<(typeof settings)[K]['parse']> | undefined => {
    const s = settings[name];
    const raw = flags.get(s.flag) ?? env[s.env];
    if (raw === undefined || raw === '') return undefined;
    return s.parse(raw, flags.has(s.flag) ? s.flag : s.env) as ReturnType<(typeof settings)[K]['parse']>;
  };
  const dataDir = pick('dataDir') ?? resolve('data');
  return {
    host: pick('host') ?? '127.0.0.1',
    port: pick('port') ?? 8000,
    dataDir,
    databaseUrl: pick('databaseUrl'),
    nodeId: pick('nodeId'),
    jobLeaseSeconds: pick('jobLeaseSeconds') ?? 30,
    training: pick('training') ?? true,
    modelsDir: pick('modelsDir') ?? join(dataDir, 'models'),
    maxUploadBytes: pick('maxUploadBytes') ?? 512 * MB,
    maxJsonBytes: pick('maxJsonBytes') ?? 16 * MB,
    apiKeys: pick('apiKeys') ?? [],
    adapterCacheBytes: pick('adapterCacheBytes') ?? 1024 * MB,
    maxBatch: pick('maxBatch') ?? 8,
    maxConcurrentJobs: pick('maxConcurrentJobs') ?? 1,
    // A common LoRA learning rate for small models; `learning_rate_multiplier` scales it per job.
    baseLearningRate: pick('baseLearningRate') ?? 2e-3,
    resumePointSeconds: pick('resumePointSeconds') ?? 60,
    trainThreads: pick('trainThreads'),
    modelAliases: pick('modelAliases') ?? new Map([['gpt-4o-mini-2024-07-18', 'localtune-default'], ['gpt-4o-mini', 'localtune-default']]),
    basePrecision: pick('basePrecision') ?? 'auto',
  };
}

/** Splits `--name value` / `--name=value` pairs; rejects flags that are not settings. */
function parseFlags(argv: readonly string[]): Map<string, string> {
  const known = new Set<string>(Object.values(settings).map((s) => s.flag));
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!known.has(name)) throw new ConfigError(`unknown option '${arg}'`);
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new ConfigError(`option '${name}' needs a value`);
    out.set(name, value);
  }
  return out;
}

function parseString(raw: string): string {
  return raw;
}

function parseBoolean(raw: string, source: string): boolean {
  const v = raw.toLowerCase();
  if (['true', '1', 'yes'].includes(v)) return true;
  if (['false', '0', 'no'].includes(v)) return false;
  throw new ConfigError(`${source}: '${raw}' is not true or false`);
}

function parsePort(raw: string, source: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${source}: '${raw}' is not a port (0-65535)`);
  return n;
}

function parsePath(raw: string): string {
  return resolve(raw);
}

function parsePositiveInt(raw: string, source: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${source}: '${raw}' is not a positive integer`);
  return n;
}

const BASE_PRECISIONS = ['auto', 'fp32', 'nf4', 'int4', 'int8'] as const;

function parseBasePrecision(raw: string, source: string): Config['basePrecision'] {
  const v = raw.toLowerCase();
  if (!(BASE_PRECISIONS as readonly string[]).includes(v)) throw new ConfigError(`${source}: '${raw}' is not one of ${BASE_PRECISIONS.join(', ')}`);
  return v as Config['basePrecision'];
}

/** A PostgreSQL connection URL; the error never repeats it, since it may hold a password. */
function parseDatabaseUrl(raw: string, source: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${source}: not a URL; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE`);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(`${source}: expected a postgres:// or postgresql:// URL, got a ${url.protocol}// one`);
  }
  return raw;
}

function parsePositiveNumber(raw: string, source: string): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${source}: '${raw}' is not a positive number`);
  return n;
}

/** `alias=model,alias2=model2`; an empty value (`LOCALTUNE_MODEL_ALIASES=`) is ignored like any empty setting, so use `none` to turn the defaults off. */
function parseModelAliases(raw: string, source: string): Map<string, string> {
  const aliases = new Map<string, string>();
  if (raw.trim() === 'none') return aliases;
  for (const pair of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf('=');
    const alias = pair.slice(0, eq).trim();
    const model = pair.slice(eq + 1).trim();
    if (eq <= 0 || !model || alias.startsWith('ft:')) throw new ConfigError(`${source}: expected comma-separated ALIAS=MODEL pairs (alias not starting with ft:), got '${pair}'`);
    aliases.set(alias, model);
  }
  return aliases;
}

function parseMegabytes(raw: string, source: string): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${source}: '${raw}' is not a positive number of megabytes`);
  return Math.floor(n * MB);
}

/** `project:key,project2:key2` — each key grants access to one project. */
function parseApiKeys(raw: string, source: string): ApiKeyGrant[] {
  return raw.split(',').map((pair) => pair.trim()).filter(Boolean).map((pair) => {
    const colon = pair.indexOf(':');
    const project = pair.slice(0, colon);
    const key = pair.slice(colon + 1);
    if (colon <= 0 || !/^[A-Za-z0-9_-]{1,64}$/.test(project) || key.length < 8) {
      throw new ConfigError(`${source}: expected comma-separated PROJECT:KEY pairs (project of letters, digits, _ or -; key of 8+ characters)`);
    }
    return { project, key };
  });
}
