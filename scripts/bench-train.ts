// `npm run bench`: fp32 MatMul peak through onnxruntime, then LoRA train-step throughput, fraction of that peak and peak memory per model
// shape and base precision (side by side against fp32 on the same shape). Each case runs in its own child process so its peak RSS is its own.
// Usage: npm run bench [-- --cases small,smollm-4x256,smollm-1x1024,smollm-1x2048,llama1b-1x512,llama1b-1x1024,llama8b-1x512 --precisions fp32,nf4,int4,int8 --model DIR --steps N --low-memory true|false]
// (--low-memory: the sessions with or without memory patterns and prepacked weight copies; default the trainer's, low for nf4 only)
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { parseModelConfig, type ModelConfig } from '../src/engine/models/config.ts';
import { baseParameters, parameterCount } from '../src/engine/models/parameters.ts';
import { PRECISIONS, type Precision } from '../src/engine/models/quantize.ts';
import { createRng } from '../src/engine/random.ts';
import { Graph } from '../src/engine/onnx/graph.ts';
import * as op from '../src/engine/onnx/ops.ts';
import { createSession } from '../src/engine/onnx/session.ts';
import type { TrainBatch } from '../src/engine/train/batch.ts';
import { createTrainer } from '../src/engine/train/trainer.ts';
import { benchModel, QUANTIZED_ONLY } from './lib/bench-models.ts';

interface Case {
  name: string;
  shape: string; // a SHAPES key
  rows: number;
  seqLen: number;
}

const CASES: Case[] = [
  { name: 'small', shape: 'small', rows: 4, seqLen: 256 },
  { name: 'smollm-4x256', shape: 'smollm', rows: 4, seqLen: 256 },
  { name: 'smollm-1x1024', shape: 'smollm', rows: 1, seqLen: 1024 },
  { name: 'smollm-1x512', shape: 'smollm', rows: 1, seqLen: 512 },
  { name: 'smollm-1x2048', shape: 'smollm', rows: 1, seqLen: 2048 }, // the trainer's largest micro-batch
  { name: 'llama1b-1x512', shape: 'llama1b', rows: 1, seqLen: 512 },
  { name: 'llama1b-1x1024', shape: 'llama1b', rows: 1, seqLen: 1024 },
  { name: 'llama8b-1x512', shape: 'llama8b', rows: 1, seqLen: 512 },
];
const DEFAULT_CASES = ['small', 'smollm-4x256', 'smollm-1x1024'];

const { values: args } = parseArgs({
  options: {
    cases: { type: 'string', default: DEFAULT_CASES.join(',') },
    precisions: { type: 'string', default: 'fp32,nf4' },
    case: { type: 'string' },
    precision: { type: 'string' },
    model: { type: 'string' },
    steps: { type: 'string', default: '4' },
    'low-memory': { type: 'string' },
    dir: { type: 'string', default: join(tmpdir(), 'localtune-bench') },
  },
});

/**
 * fp32 MatMul GFLOP/s at 2048³ through an ORT session with the trainer's settings: the fastest of 20 runs
 * (~17 GFLOP each, so per-run overhead is negligible; the machine may be shared, so the best is the machine's).
 */
async function matmulPeak(): Promise<number> {
  const n = 2048;
  const g = new Graph('peak');
  const a = g.input('a', 'float32', [n, n]);
  const b = g.input('b', 'float32', [n, n]);
  g.output(op.matmul(a, b), 'y');
  const s = await createSession(g.serialize(), { device: 'cpu' });
  const feeds = { a: new ort.Tensor('float32', new Float32Array(n * n).fill(0.5), [n, n]), b: new ort.Tensor('float32', new Float32Array(n * n).fill(0.25), [n, n]) };
  for (let i = 0; i < 2; i++) await s.run(feeds);
  let best = Infinity;
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    await s.run(feeds);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  await s.close();
  return (2 * n ** 3) / best / 1e9;
}

/** FLOPs per trained token: 4·(linear params incl. the head) (forward + input-gradient pass) + 12·T·D·L for attention. */
function flopsPerToken(config: ModelConfig, T: number): number {
  const linear = baseParameters(config)
    .filter((p) => p.dims.length === 2 && !p.name.includes('embed_tokens'))
    .reduce((n, p) => n + p.dims[0] * p.dims[1], 0);
  const head = config.vocabSize * config.hiddenSize * (config.tieWordEmbeddings ? 1 : 0); // tied head is the embedding
  return 4 * (linear + head) + 12 * T * config.numHeads * config.headDim * config.numLayers;
}

async function runCase(c: Case, precision: Precision, steps: number) {
  const { modelDir, cacheDir } = args.model
    ? { modelDir: resolve(args.model), cacheDir: join(resolve(args.dir!), `cache-${c.shape}-model`) }
    : benchModel(resolve(args.dir!), c.shape, precision);
  const config = parseModelConfig(JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')));
  const trainer = await createTrainer({
    modelDir,
    cacheDir,
    precision,
    lora: { r: 8, alpha: 16, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] },
    seed: 1,
    device: 'cpu',
    lowMemory: args['low-memory'] === undefined ? undefined : args['low-memory'] === 'true',
  });
  const rng = createRng(2);
  const { rows: B, seqLen: T } = c;
  const batch: TrainBatch = { rows: B, seqLen: T, inputIds: new Int32Array(B * T), labels: new Int32Array(B * T), lossWeights: new Float32Array(B * T), attentionMask: new Float32Array(B * T).fill(1) };
  for (let i = 0; i < B * T; i++) batch.inputIds[i] = Math.floor(rng.float() * config.vocabSize);
  for (let i = 0; i < B * T; i++) {
    if ((i + 1) % T === 0) continue;
    batch.labels[i] = batch.inputIds[i + 1];
    batch.lossWeights[i] = 1;
  }
  const t0 = performance.now();
  await trainer.trainStep([batch], 1e-4); // session creation + first run
  const firstMs = performance.now() - t0;
  const peakBefore = await matmulPeak();
  // The best step against the best MatMul round: both as free of other load as this run saw.
  let ms = Infinity;
  for (let i = 0; i < steps; i++) {
    const t1 = performance.now();
    await trainer.trainStep([batch], 1e-4);
    ms = Math.min(ms, performance.now() - t1);
  }
  const peak = Math.max(peakBefore, await matmulPeak());
  await trainer.close();
  const tokens = B * T;
  return {
    ms,
    tokensPerSec: (tokens / ms) * 1000,
    gflops: (flopsPerToken(config, T) * tokens) / (ms / 1000) / 1e9,
    peak,
    firstMs,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    params: parameterCount(baseParameters(config)),
  };
}

if (args.case) {
  const c = CASES.find((x) => x.name === args.case)!;
  const r = await runCase(c, args.precision as Precision, Number(args.steps));
  process.stdout.write(JSON.stringify(r));
} else {
  const precisions = args.precisions!.split(',') as Precision[];
  for (const p of precisions) if (!PRECISIONS.includes(p)) throw new Error(`unknown precision ${p} (${PRECISIONS.join(', ')})`);
  console.log(`${availableParallelism()} threads; peak = the best fp32 MatMul (2048³) GFLOP/s measured around any case of this run; base precisions ${precisions.join(', ')}`);
  const results = [];
  for (const name of args.cases!.split(',')) {
    const c = CASES.find((x) => x.name === name);
    if (!c) throw new Error(`unknown case ${name} (${CASES.map((x) => x.name).join(', ')})`);
    for (const precision of precisions) {
      if (precision === 'fp32' && QUANTIZED_ONLY.has(c.shape) && !args.model) continue;
      const extra = [...(args.model ? ['--model', args.model] : []), ...(args['low-memory'] ? ['--low-memory', args['low-memory']] : [])];
      const child = ['--import', 'tsx', fileURLToPath(import.meta.url), '--case', name, '--precision', precision, '--steps', args.steps!, '--dir', args.dir!, ...extra];
      const out = execFileSync(process.execPath, child, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
      results.push({ c, precision, r: JSON.parse(out) });
    }
  }
  // The peak is the machine's: on a shared machine a case may only see a slowed one, so the run's best is the denominator.
  const peak = Math.max(...results.map(({ r }) => r.peak));
  for (const { c, precision, r } of results) {
    const fp32 = results.find((x) => x.c === c && x.precision === 'fp32');
    const vsFp32 = fp32 && precision !== 'fp32' ? ` (${(r.ms / fp32.r.ms).toFixed(2)}× fp32's step time, ${(r.peakRssMiB / fp32.r.peakRssMiB).toFixed(2)}× its peak RSS)` : '';
    console.log(
      `${c.name} ${precision} (${(r.params / 1e9).toFixed(2)}B params, ${c.rows}×${c.seqLen}, LoRA r8 q/k/v/o): best ${r.ms.toFixed(0)} ms/step, ${r.tokensPerSec.toFixed(0)} tokens/s, ${r.gflops.toFixed(1)} GFLOP/s = ${((100 * r.gflops) / peak).toFixed(0)} % of peak ${peak.toFixed(1)} (${r.peak.toFixed(1)} around this case); first step ${(r.firstMs / 1000).toFixed(1)} s; peak RSS ${r.peakRssMiB.toFixed(0)} MiB${vsFp32}`,
    );
  }
}
