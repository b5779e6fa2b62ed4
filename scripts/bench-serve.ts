// `npm run bench -- serve`: decode tokens/s with ÷ without adapters (batch 1, and batch 8 with 8 different adapters), time to first token on a new vs a cached adapter, prefill time.
// One model (512 wide, 8 layers, vocab 32000, LoRA r8 on q/k/v/o), one session, measured side by side in one run. Then per model shape and
// base precision (each in its own process): resident bytes per parameter and bare-base decode tokens/s at batch 1 and 8, side by side with fp32.
// Usage: npm run bench -- serve [--shapes smollm,llama1b --precisions fp32,nf4,int4,int8]
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseModelConfig } from '../src/engine/models/config.ts';
import { createRng, fillNormal } from '../src/engine/random.ts';
import { initAdapter } from '../src/engine/lora/init.ts';
import { saveAdapter } from '../src/engine/lora/peft.ts';
import { resolveLoraConfig } from '../src/engine/lora/config.ts';
import { createAdapterCache, type PreparedAdapter } from '../src/engine/serve/adapter-cache.ts';
import { createModelRunner, type ModelRunner } from '../src/engine/serve/model-runner.ts';
import { baseParameters as parametersOf, parameterCount } from '../src/engine/models/parameters.ts';
import { PRECISIONS, type Precision } from '../src/engine/models/quantize.ts';
import { readWeightCache } from '../src/engine/models/weight-cache.ts';
import { Graph } from '../src/engine/onnx/graph.ts';
import { createSession } from '../src/engine/onnx/session.ts';
import { benchModel, writeRandomModel } from './lib/bench-models.ts';

// Flags of other benches pass through `npm run bench` too: unknown ones are ignored.
const { values: args } = parseArgs({
  strict: false,
  options: {
    shapes: { type: 'string', default: 'smollm' },
    precisions: { type: 'string', default: 'fp32,nf4,int4,int8' },
    'precision-case': { type: 'string' },
    dir: { type: 'string', default: join(tmpdir(), 'localtune-bench') },
  },
});
const PRECISION_STEPS = 24; // decode steps per batch size (memory-bound: a 1B fp32 step reads ~5 GB)

/**
 * This process's resident anonymous memory outside the JS heap and JS buffers (onnxruntime's allocations and copies):
 * RssAnon from /proc/self/status less V8's heap and array buffers, bytes.
 */
function residentNative(): number {
  const { heapTotal, arrayBuffers } = process.memoryUsage();
  return 1024 * Number(/RssAnon:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) - heapTotal - arrayBuffers;
}

/**
 * Resident bytes of `file`'s pages mapped into this process (/proc/self/smaps): the weight pages read so far. Pss,
 * not Rss: views of one tensor (a tied head and its embedding rows) map the same pages twice, and Rss counts both.
 */
function residentMapped(file: string): number {
  let bytes = 0;
  let inFile = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inFile = line.trimEnd().endsWith(file);
    else if (inFile && line.startsWith('Pss:')) bytes += 1024 * Number(/(\d+)/.exec(line)![1]);
  }
  return bytes;
}

/**
 * One (shape, precision), bare base, median decode step at batch 1 and 8 after a 32-token prompt, as tokens/s, and
 * memory per base parameter: the base weights resident once loaded and warm = `pages`, the weight cache file's pages
 * onnxruntime has mapped and read (smaps Pss of that file), + `session`, the native memory session creation added
 * (weights onnxruntime copied or prepacked, and its per-node state; measured before any run, so no activations or KV cache);
 * `total` = all the RSS the warm runner added (weights, the arena's activations and kernel scratch, the KV cache).
 * Prints JSON.
 */
async function precisionCase(shape: string, precision: Precision, threads: number) {
  const { modelDir, cacheDir } = benchModel(String(args.dir), shape, precision);
  const config = parseModelConfig(JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')));
  const dataFile = readWeightCache(modelDir, cacheDir, { dtype: 'float32', precision })!.dataPath;
  const warmUp = new Graph('warm-up');
  warmUp.output(warmUp.input('x', 'float32', [1]), 'y');
  await (await createSession(warmUp.serialize(), { device: 'cpu' })).close(); // onnxruntime's one-time set-up is no weight
  const rssBefore = process.memoryUsage().rss;
  const nativeBefore = residentNative();
  const runner = await createModelRunner({ modelDir, cacheDir, config, contextLength: 2048, precision, device: 'cpu', threads });
  const sessionCopies = residentNative() - nativeBefore;
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919) % config.vocabSize);
  const rate = async (batch: number) => {
    const { rows, logits } = await runner.prefill(Array.from({ length: batch }, () => ({ tokens: prompt, adapter: null })));
    let next = logits.map((l) => l.reduce((best, v, i) => (v > l[best] ? i : best), 0));
    const times: number[] = [];
    for (let s = 0; s < PRECISION_STEPS; s++) {
      const t0 = performance.now();
      await runner.decode(next);
      times.push(performance.now() - t0);
      next = next.map((t) => (t + 1) % config.vocabSize);
    }
    for (const r of rows) runner.release(r);
    return (1000 * batch) / times.sort((x, y) => x - y)[times.length >> 1];
  };
  const b1 = await rate(1);
  const params = parameterCount(parametersOf(config));
  const pages = residentMapped(dataFile) / params;
  const session = sessionCopies / params;
  const total = (process.memoryUsage().rss - rssBefore) / params;
  const b8 = await rate(8);
  await runner.close();
  process.stdout.write(JSON.stringify({ b1, b8, pages, session, total, params }));
}

if (typeof args['precision-case'] === 'string') {
  const [shape, precision] = args['precision-case'].split(':');
  await precisionCase(shape, precision as Precision, Number(process.env.LOCALTUNE_BENCH_THREADS ?? Math.min(availableParallelism(), 8)));
  process.exit(0);
}

const configJson = {
  architectures: ['LlamaForCausalLM'], hidden_size: 512, intermediate_size: 1408, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 8,
  vocab_size: 32000, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 2048, tie_word_embeddings: false,
};
const PROMPT = 100; // prompt tokens; decoding runs to ~200 positions
const STEPS = 96;
const threads = Number(process.env.LOCALTUNE_BENCH_THREADS ?? Math.min(availableParallelism(), 8));

const dir = join(tmpdir(), `localtune-bench-serve-${process.pid}`);
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'model');
const config = parseModelConfig(configJson);
writeRandomModel(modelDir, configJson, createRng(1));

/** Random adapters (B non-zero, so the math is real) saved in PEFT layout. */
const lora = resolveLoraConfig({ r: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] });
function writeAdapter(name: string, seed: number): string {
  const tensors = initAdapter(config, lora, seed);
  const r = createRng(seed + 1000);
  for (const [k, t] of tensors) if (k.includes('lora_B')) fillNormal(r, t.data, 0, 0.01);
  const adapterDir = join(dir, 'adapters', name);
  saveAdapter(adapterDir, lora, tensors, 'bench');
  return adapterDir;
}
const cache = createAdapterCache(1024 * 1024 * 1024);
const adapterDirs = Array.from({ length: 10 }, (_, i) => writeAdapter(`a${i}`, i + 1));
const adapters: PreparedAdapter[] = adapterDirs.slice(0, 8).map((d, i) => cache.get(`a${i}`, d, config));

const runner: ModelRunner = await createModelRunner({ modelDir, cacheDir: join(dir, 'cache'), config, contextLength: 2048, device: 'cpu', threads });
const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919) % config.vocabSize);
const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > x[best] ? i : best), 0);

/** Decode tokens/s for rows with these adapters, after a PROMPT-token prefill. */
async function decodeRate(rowAdapters: (PreparedAdapter | null)[]): Promise<number> {
  const { rows, logits } = await runner.prefill(rowAdapters.map((adapter) => ({ tokens: prompt, adapter })));
  let next = logits.map(argmax);
  await runner.decode(next); // warm-up (adapter inputs built once per batch composition)
  const times: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    const t0 = performance.now();
    next = (await runner.decode(next)).map(argmax);
    times.push(performance.now() - t0);
  }
  for (const r of rows) runner.release(r);
  // The median step: robust to other processes on a shared machine.
  const median = times.sort((x, y) => x - y)[times.length >> 1];
  return (1000 * rowAdapters.length) / median;
}

/** Best of `reps` runs of each setting, interleaved so machine noise hits both alike. */
async function ratio(a: (PreparedAdapter | null)[], b: (PreparedAdapter | null)[], reps = 3): Promise<[number, number]> {
  let bestA = 0;
  let bestB = 0;
  for (let i = 0; i < reps; i++) {
    bestA = Math.max(bestA, await decodeRate(a));
    bestB = Math.max(bestB, await decodeRate(b));
  }
  return [bestA, bestB];
}

/** Time to first token: adapter lookup (a load from disk when new), prefill of a short prompt, the first pick. */
async function firstToken(key: string, adapterDir: string): Promise<number> {
  const t0 = performance.now();
  const adapter = cache.get(key, adapterDir, config);
  const { rows, logits } = await runner.prefill([{ tokens: prompt.slice(0, 20), adapter }]);
  argmax(logits[0]);
  const ms = performance.now() - t0;
  runner.release(rows[0]);
  return ms;
}

await decodeRate([null]); // warm the session
const [b1Adapter, b1Base] = await ratio([adapters[0]], [null]);
const [b8Adapters, b8Base] = await ratio(adapters, Array(8).fill(null));
await firstToken('a0', adapterDirs[0]);
const cachedTtft = Math.min(await firstToken('a0', adapterDirs[0]), await firstToken('a1', adapterDirs[1]));
const newTtft = Math.min(await firstToken('a8', adapterDirs[8]), await firstToken('a9', adapterDirs[9]));
let prefillMs = Infinity;
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  const { rows } = await runner.prefill([{ tokens: Array.from({ length: 200 }, (_, j) => (j * 31) % config.vocabSize), adapter: adapters[0] }]);
  prefillMs = Math.min(prefillMs, performance.now() - t0);
  runner.release(rows[0]);
}
await runner.close();

const f = (x: number, d = 1) => x.toFixed(d);
console.log(`serve: 512 wide, 8 layers, vocab 32000, LoRA r8 q/k/v/o, fp32 CPU, ${threads} threads, prompt ${PROMPT} + ${STEPS} decode steps`);
console.log(`  decode batch 1: ${f(b1Adapter)} tok/s with adapter, ${f(b1Base)} without → ratio ${f(b1Adapter / b1Base, 3)} (target ≥ 0.95)`);
console.log(`  decode batch 8: ${f(b8Adapters)} tok/s with 8 different adapters, ${f(b8Base)} bare base → ratio ${f(b8Adapters / b8Base, 3)} (target ≥ 0.9)`);
console.log(`  time to first token (20-token prompt): ${f(cachedTtft)} ms cached adapter, ${f(newTtft)} ms never-used adapter → +${f(newTtft - cachedTtft)} ms (target < 20 ms)`);
console.log(`  prefill of a 200-token prompt: ${f(prefillMs)} ms`);

const precisions = String(args.precisions).split(',') as Precision[];
for (const p of precisions) if (!PRECISIONS.includes(p)) throw new Error(`unknown precision ${p} (${PRECISIONS.join(', ')})`);
console.log(`serve by base precision (bare base, prompt 32, median of ${PRECISION_STEPS} decode steps; bytes/param after batch-1 decoding: resident base weights = weight-file pages mapped (Pss) + native memory session creation added (prepacked or copied weights, and onnxruntime's per-node state); runner = all RSS it added, KV cache and arena included):`);
for (const shape of String(args.shapes).split(',')) {
  const rows = precisions.map((precision) => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--precision-case', `${shape}:${precision}`, '--dir', String(args.dir)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    return { precision, r: JSON.parse(out) as { b1: number; b8: number; pages: number; session: number; total: number; params: number } };
  });
  const fp32 = rows.find((x) => x.precision === 'fp32');
  for (const { precision, r } of rows) {
    const vs = fp32 && precision !== 'fp32' ? ` → ${f(r.b1 / fp32.r.b1, 2)}× / ${f(r.b8 / fp32.r.b8, 2)}× fp32's decode rate` : '';
    console.log(`  ${shape} ${precision} (${f(r.params / 1e9, 2)}B params): ${f(r.pages + r.session, 3)} bytes/param resident base weights (${f(r.pages, 3)} pages + ${f(r.session, 3)} session; runner ${f(r.total, 2)}); decode batch 1 ${f(r.b1, 2)} tok/s, batch 8 ${f(r.b8, 2)} tok/s${vs}`);
  }
}
