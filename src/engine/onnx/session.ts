// onnxruntime-node session wrapper: device choice (LOCALTUNE_DEVICE=auto|cpu|cuda) with CPU fallback, and the CPU settings that measured fastest.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';

export type Device = 'cpu' | 'cuda';
export type DeviceRequest = Device | 'auto';

export interface SessionOptions {
  /** Default: LOCALTUNE_DEVICE, else 'auto'. */
  device?: DeviceRequest;
  /** Folder external initializers are resolved against when the model is given as bytes. */
  externalDataDir?: string;
  /** Intra-op threads; default: all cores. */
  threads?: number;
  /** Trades ~2–7 % speed for ~35 % less peak memory (no memory patterns, no prepacked weight copies). */
  lowMemory?: boolean;
  /** 'basic' keeps ORT from fusing into contrib ops that exist for float32 only (float64 test graphs). Default 'all'. */
  optimization?: 'basic' | 'all';
  log?: (line: string) => void;
}

export interface Session {
  session: ort.InferenceSession;
  device: Device;
  run(feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>>;
  close(): Promise<void>;
}

export function requestedDevice(env = process.env): DeviceRequest {
  const v = (env.LOCALTUNE_DEVICE ?? 'auto').toLowerCase();
  if (v !== 'auto' && v !== 'cpu' && v !== 'cuda') throw new Error(`LOCALTUNE_DEVICE must be auto, cpu or cuda, not ${JSON.stringify(v)}`);
  return v;
}

let cudaUnavailable = false;

/** Where onnxruntime-node looks for its CUDA provider library (installed separately; see DESIGN "Devices"). */
export function cudaProviderPath(): string {
  const pkg = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so');
}

function baseOptions(o: SessionOptions): ort.InferenceSession.SessionOptions {
  // Flush denormals to zero: a masked attention score's exp underflows through the denormal range, which made
  // Softmax ~6× slower (measured 2.7 vs 0.4 ms on [4, 8, 256, 256]); no result of ours lives in that range.
  const session: Record<string, string> = { set_denormal_as_zero: '1' };
  if (o.externalDataDir) session.model_external_initializers_file_folder_path = o.externalDataDir;
  if (o.lowMemory) session.disable_prepacking = '1';
  return {
    // Sequential execution with intra-op = cores and inter-op 1: parallel mode oversubscribes and halves speed.
    executionMode: 'sequential',
    intraOpNumThreads: o.threads ?? availableParallelism(),
    interOpNumThreads: 1,
    graphOptimizationLevel: o.optimization ?? 'all',
    enableCpuMemArena: true,
    enableMemPattern: !o.lowMemory,
    extra: { session },
  };
}

/** Creates a session on the requested device; 'auto' tries CUDA and falls back to CPU with a log line. */
export async function createSession(model: Uint8Array | string, o: SessionOptions = {}): Promise<Session> {
  const want = o.device ?? requestedDevice();
  const log = o.log ?? ((line: string) => console.error(line));
  const opts = baseOptions(o);
  let device: Device = 'cpu';
  let session: ort.InferenceSession | undefined;
  if (want === 'auto' && !cudaUnavailable && !existsSync(cudaProviderPath())) {
    cudaUnavailable = true;
    log(`localtune engine: device auto: no CUDA execution provider at ${cudaProviderPath()}; using CPU`);
  }
  if (want === 'cuda' || (want === 'auto' && !cudaUnavailable)) {
    try {
      session = await create(model, { ...opts, executionProviders: ['cuda', 'cpu'] });
      device = 'cuda';
    } catch (err) {
      if (want === 'cuda') throw new Error(`LOCALTUNE_DEVICE=cuda but the CUDA execution provider failed to load: ${(err as Error).message}`);
      cudaUnavailable = true;
      log(`localtune engine: CUDA execution provider unavailable (${firstLine(err)}); using CPU`);
    }
  }
  session ??= await create(model, { ...opts, executionProviders: ['cpu'] });
  const s = session;
  return {
    session: s,
    device,
    run: (feeds) => s.run(feeds) as Promise<Record<string, ort.Tensor>>,
    close: () => s.release(),
  };
}

function create(model: Uint8Array | string, opts: ort.InferenceSession.SessionOptions) {
  // Two calls because create() is overloaded per argument type (a path lets ORT map the file).
  return typeof model === 'string' ? ort.InferenceSession.create(model, opts) : ort.InferenceSession.create(model, opts);
}

function firstLine(err: unknown): string {
  return String((err as Error).message ?? err).split('\n')[0];
}
