// `localtune engine logits|step`: the engine's logits, loss, LoRA gradients and AdamW steps written to files, for comparison with other implementations.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseModelConfig } from '../models/config.ts';
import { PRECISIONS, type Precision } from '../models/quantize.ts';
import { writeSafetensors } from '../models/safetensors.ts';
import { loadAdapter, saveAdapter } from '../lora/peft.ts';
import { requestedDevice } from '../onnx/session.ts';
import { seqLenBucket, type TrainBatch } from './batch.ts';
import { createTrainer } from './trainer.ts';
import { computeLogits } from './verify.ts';

export const ENGINE_USAGE = `usage:
  localtune engine logits --model DIR [--adapter DIR] --tokens FILE --out FILE [--cache DIR] [--base-precision P]
      FILE (tokens): {"input_ids": [[id, …], …]}  rows may differ in length
      writes {"vocab_size": V, "logits": [[[V floats] per token] per row]}
  localtune engine step --model DIR --adapter DIR --batch FILE --out DIR [--steps K] [--lr X] [--max-grad-norm N] [--weight-decay W] [--cache DIR] [--base-precision P]
      FILE (batch): {"input_ids": [[id, …], …], "loss_weights": [[w, …], …]}
      loss_weights[b][t] weights the prediction of input_ids[b][t+1] made at position t (same length as the row; the last must be 0)
      writes DIR/loss.json (mean loss, accuracy, tokens before any step), DIR/gradients.safetensors
      (∂ mean loss / ∂ LoRA tensor, PEFT names), and with --steps K: DIR/steps.json and DIR/adapter/ (PEFT) after K AdamW steps
  --base-precision fp32 (default) | nf4 | int4 | int8: the base's matrices block-quantized as README "Quantized base
      models" says (NF4: bitsandbytes' levels, blocks of 64 with an fp32 absmax, 32 for the embedding and LM head;
      int4/int8: blocks of 32, symmetric, fp32 scales), so an independent implementation can dequantize the same weights
      and compare
  --cache DIR defaults to $LOCALTUNE_DATA_DIR/cache/<model folder name> (LOCALTUNE_DATA_DIR defaults to ./data); LOCALTUNE_DEVICE picks the device`;

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

function rowsOf(v: unknown, field: string): number[][] {
  if (!Array.isArray(v) || v.length === 0 || !v.every((r) => Array.isArray(r) && r.length > 0 && r.every((x) => typeof x === 'number'))) {
    throw new Error(`${field} must be a non-empty list of non-empty lists of numbers`);
  }
  return v as number[][];
}

/** Right-pads rows into one TrainBatch of the row count and the seq-length bucket of the longest row. */
function toBatch(ids: number[][], weights: number[][], contextLength: number): TrainBatch {
  const T = seqLenBucket(Math.max(...ids.map((r) => r.length)), contextLength);
  const B = ids.length;
  const batch: TrainBatch = { rows: B, seqLen: T, inputIds: new Int32Array(B * T), labels: new Int32Array(B * T), lossWeights: new Float32Array(B * T), attentionMask: new Float32Array(B * T) };
  ids.forEach((row, b) => {
    if (row.length > T) throw new Error(`row ${b} has ${row.length} tokens, more than the context (${contextLength})`);
    if (weights[b]?.length !== row.length) throw new Error(`loss_weights[${b}] must have ${row.length} entries`);
    if (weights[b][row.length - 1] !== 0) throw new Error(`loss_weights[${b}] must end in 0 (the last token predicts nothing)`);
    row.forEach((id, t) => {
      batch.inputIds[b * T + t] = id;
      batch.attentionMask[b * T + t] = 1;
      if (t + 1 < row.length && weights[b][t] > 0) {
        batch.labels[b * T + t] = row[t + 1];
        batch.lossWeights[b * T + t] = weights[b][t];
      }
    });
  });
  return batch;
}

/** Runs `localtune engine …`; returns the exit code. */
export async function runEngineCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'logits' && sub !== 'step') {
    console.log(ENGINE_USAGE);
    return sub === undefined || sub === '--help' ? 0 : 2;
  }
  const { values: a } = parseArgs({
    args: rest,
    options: {
      model: { type: 'string' },
      adapter: { type: 'string' },
      tokens: { type: 'string' },
      batch: { type: 'string' },
      out: { type: 'string' },
      cache: { type: 'string' },
      steps: { type: 'string', default: '0' },
      lr: { type: 'string', default: '1e-4' },
      'max-grad-norm': { type: 'string', default: '1' },
      'weight-decay': { type: 'string', default: '0' },
      'base-precision': { type: 'string', default: 'fp32' },
    },
  });
  const precision = a['base-precision'] as Precision;
  if (!PRECISIONS.includes(precision)) throw new Error(`--base-precision must be one of ${PRECISIONS.join(', ')}, not ${JSON.stringify(precision)}`);
  if (!a.model || !a.out) throw new Error(`--model and --out are required\n${ENGINE_USAGE}`);
  const modelDir = resolve(a.model);
  const cacheDir = resolve(a.cache ?? join(process.env.LOCALTUNE_DATA_DIR ?? 'data', 'cache', basename(modelDir)));
  const config = parseModelConfig(readJson(join(modelDir, 'config.json')));
  const adapter = a.adapter ? loadAdapter(resolve(a.adapter), config) : null;
  const device = requestedDevice();

  if (sub === 'logits') {
    if (!a.tokens) throw new Error('--tokens is required');
    const tokens = rowsOf(readJson(a.tokens).input_ids, 'input_ids');
    const { logits } = await computeLogits({ modelDir, cacheDir, tokens, adapter: adapter ? { lora: adapter.config, tensors: adapter.tensors } : undefined, precision, device });
    const V = config.vocabSize;
    const rows = logits.map((l) => Array.from({ length: l.length / V }, (_, t) => Array.from(l.subarray(t * V, (t + 1) * V))));
    writeFileSync(a.out, JSON.stringify({ vocab_size: V, logits: rows }));
    return 0;
  }

  if (!a.batch || !adapter) throw new Error('--batch and --adapter are required');
  const file = readJson(a.batch);
  const batch = toBatch(rowsOf(file.input_ids, 'input_ids'), rowsOf(file.loss_weights, 'loss_weights'), config.maxPositionEmbeddings);
  const trainer = await createTrainer({
    modelDir,
    cacheDir,
    lora: adapter.config,
    precision,
    seed: 0,
    adapter: adapter.tensors,
    device,
    maxGradNorm: Number(a['max-grad-norm']),
    adamw: { weightDecay: Number(a['weight-decay']) },
  });
  try {
    mkdirSync(a.out, { recursive: true });
    const g = await trainer.gradients([batch]);
    writeFileSync(join(a.out, 'loss.json'), JSON.stringify({ loss: g.loss, accuracy: g.accuracy, tokens: g.tokens }, null, 2));
    writeSafetensors(join(a.out, 'gradients.safetensors'), g.grads);
    const steps = Number(a.steps);
    if (steps > 0) {
      const log = [];
      for (let i = 0; i < steps; i++) log.push(await trainer.trainStep([batch], Number(a.lr)));
      writeFileSync(join(a.out, 'steps.json'), JSON.stringify(log, null, 2));
      saveAdapter(join(a.out, 'adapter'), adapter.config, trainer.getAdapter(), adapter.baseModelName ?? modelDir);
    }
  } finally {
    await trainer.close();
  }
  return 0;
}
