// End-to-end test helpers: run the real `localtune serve` as a child process on a free port, and `localtune worker`
// processes beside it, each with a temp data dir or a given (shared) one. With LOCALTUNE_TEST_ENGINE=postgres every data
// dir gets its own fresh PostgreSQL database (the servers, workers and CLI commands given that data dir all use it), so
// the same tests check the PostgreSQL engine.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { engineEnv } from './postgres.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export interface TestServerOptions {
  /** Reuse a data dir (e.g. one prepared with `localtune keys create`); default: a fresh temp dir removed by stop(). */
  dataDir?: string;
  /** Extra environment variables (e.g. `LOCALTUNE_MAX_UPLOAD_MB`). */
  env?: Record<string, string>;
  /** Extra `serve` flags. */
  args?: string[];
  /** How long to wait for the `listening on` line, default 30 s. */
  startTimeoutMs?: number;
}

export interface TestServer {
  /** `http://127.0.0.1:PORT` (no /v1); stable across restart(). */
  readonly url: string;
  /** `http://127.0.0.1:PORT/v1`, what the SDK's baseURL takes. */
  readonly baseURL: string;
  readonly dataDir: string;
  /** The server process's id (changes on restart()), e.g. to read its memory use from /proc. */
  readonly pid: number;
  /** An `openai` client pointed at the server (no retries, so tests see first answers). */
  client(apiKey?: string, options?: ConstructorParameters<typeof OpenAI>[0]): OpenAI;
  /** Everything the server printed (stdout and stderr), for assertions and failure messages. */
  output(): string;
  /** Freezes the process (SIGSTOP): it handles nothing more until kill(), as if it had died at that instant. */
  suspend(): void;
  /** Sends a signal (default SIGKILL: a crash) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and data dir (after kill()). */
  restart(): Promise<void>;
  /** SIGTERM, wait, and remove the temp data dir if this helper made it. */
  stop(): Promise<void>;
}

/** The line `serve` prints once it listens (its URL captured), and the one `worker` prints once it takes jobs. */
const LISTENING = /localtune listening on (http:\/\/\S+)/;
const WORKER_STARTED = /localtune worker started/;

/** Runs `node bin/localtune.js localtune-args…` and waits for its `ready` line on stdout. */
function launch(args: string[], env: Record<string, string>, timeoutMs: number, log: string[], ready: RegExp): Promise<{ child: ChildProcess; ready: RegExpExecArray }> {
  const child = spawn(process.execPath, [join(repoRoot, 'bin/localtune.js'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => fail(new Error(`localtune ${args[0]} did not start within ${timeoutMs} ms`)), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${err.message}\n--- its output ---\n${log.join('')}`));
    };
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      log.push(text);
      buffered += text;
      const m = ready.exec(buffered);
      if (m) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve({ child, ready: m });
      }
    };
    const onExit = (code: number | null) => fail(new Error(`localtune ${args[0]} exited with code ${code} before it was ready`));
    // Said in the output, so a test waiting on a node that died shows why.
    child.on('exit', (code, signal) => log.push(`\n[localtune ${args[0]} exited: ${signal ?? `code ${code}`}]\n`));
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => log.push(chunk.toString()));
    child.on('exit', onExit);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'localtune-test-'));
  const env = { ...(await engineEnv(dataDir)), ...options.env };
  const timeout = options.startTimeoutMs ?? 30_000;
  const log: string[] = [];
  const baseArgs = ['serve', '--data-dir', dataDir, '--host', '127.0.0.1', ...(options.args ?? [])];
  const start = async (port: string) => {
    const started = await launch([...baseArgs, '--port', port], env, timeout, log, LISTENING);
    return { child: started.child, url: started.ready[1]! };
  };
  let { child, url } = await start('0');
  const port = new URL(url).port;

  return {
    get url() { return url; },
    get baseURL() { return `${url}/v1`; },
    dataDir,
    get pid() { return child.pid!; },
    client: (apiKey = 'sk-test', clientOptions = {}) => new OpenAI({ apiKey, baseURL: `${url}/v1`, maxRetries: 0, ...clientOptions }),
    output: () => log.join(''),
    suspend() {
      child.kill('SIGSTOP');
    },
    async kill(signal = 'SIGKILL') {
      child.kill(signal);
      await exited(child);
    },
    async restart() {
      ({ child, url } = await start(port));
    },
    async stop() {
      child.kill('SIGTERM');
      await exited(child);
      if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TestWorkerOptions {
  /** The data dir: shared with a `serve --no-training` (the embedded engine), or the worker's own; default: a fresh temp dir removed by stop(). */
  dataDir?: string;
  /** `--node-id`; default the worker's (host, role and data dir). */
  nodeId?: string;
  env?: Record<string, string>;
  /** Extra `worker` flags. */
  args?: string[];
  /** How long to wait for the `worker started` line, default 30 s. */
  startTimeoutMs?: number;
}

export interface TestWorker {
  readonly dataDir: string;
  readonly nodeId: string | undefined;
  readonly pid: number;
  /** Everything the worker printed (stdout and stderr): its log names the jobs it trains. */
  output(): string;
  /** Sends a signal (default SIGKILL: a crash) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the worker again with the same data dir and node id (after kill()). */
  restart(): Promise<void>;
  /** SIGTERM, wait, and remove the temp data dir if this helper made it. */
  stop(): Promise<void>;
}

/** Runs the real `localtune worker` (training only, no HTTP) as a child process and waits until it takes jobs. */
export async function startTestWorker(options: TestWorkerOptions = {}): Promise<TestWorker> {
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'localtune-worker-'));
  const args = ['worker', '--data-dir', dataDir, ...(options.nodeId ? ['--node-id', options.nodeId] : []), ...(options.args ?? [])];
  const env = { ...(await engineEnv(dataDir)), ...options.env };
  const start = async () => (await launch(args, env, options.startTimeoutMs ?? 30_000, log, WORKER_STARTED)).child;
  const log: string[] = [];
  let child = await start();
  return {
    dataDir,
    nodeId: options.nodeId,
    get pid() { return child.pid!; },
    output: () => log.join(''),
    async kill(signal = 'SIGKILL') {
      child.kill(signal);
      await exited(child);
    },
    async restart() {
      child = await start();
    },
    async stop() {
      child.kill('SIGTERM');
      await exited(child);
      if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Runs a `localtune` CLI command to completion (e.g. `keys create`) and returns its stdout. */
export async function runCli(args: string[], env: Record<string, string> = {}): Promise<string> {
  const dataDir = args[args.indexOf('--data-dir') + 1];
  const engine = args.includes('--data-dir') && dataDir !== undefined ? await engineEnv(dataDir) : {};
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin/localtune.js'), ...args], { cwd: repoRoot, env: { ...process.env, ...engine, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`localtune ${args.join(' ')} exited ${code}: ${err}`))));
  });
}

/** Creates an API key for `project` in `dataDir` and returns the plaintext key. */
export async function createKey(dataDir: string, project: string): Promise<string> {
  const out = await runCli(['keys', 'create', '--project', project, '--data-dir', dataDir]);
  const key = out.split('\n').find((line) => line.startsWith('sk-'));
  if (!key) throw new Error(`no key in output: ${out}`);
  return key;
}
