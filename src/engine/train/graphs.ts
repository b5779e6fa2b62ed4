// The training graphs: loss+gradients of one micro-batch (LoRA A/B as inputs), supervised or DPO, eval losses, and the AdamW update with clipping.
import { gradients } from '../onnx/autodiff.ts';
import { Graph, type FloatDType, type Tensor } from '../onnx/graph.ts';
import * as op from '../onnx/ops.ts';
import type { ModelConfig } from '../models/config.ts';
import { decoderStack, finalNorm, lmHead, lmHeadLoss, staticRopeTables, type LinearHook } from '../models/llama.ts';
import type { WeightFactory } from '../models/weight-source.ts';
import { loraModules, loraParameters, type ParameterSpec } from '../models/parameters.ts';
import { loraScaling, type LoraConfig } from '../lora/config.ts';

// Dims: B rows, T seqLen, N = B·T, K loss rows (bucketed), D hidden, V vocab, R LoRA rank.

/** A fixed training shape: B rows of T tokens, and K rows that reach the LM head (≥ the batch's weighted tokens). */
export interface Bucket {
  rows: number;
  seqLen: number;
  lossRows: number;
}

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** Graph input/output names shared by the graphs and the trainer that feeds them. */
export const IO = {
  inputIds: 'input_ids', // [B, T] int32
  attentionBias: 'attention_bias', // [B, 1, 1, T, T]
  lossRows: 'loss_rows', // [K] int64: flat row b·T + t of each weighted prediction (padding: 0)
  lossLabels: 'loss_labels', // [K] int64
  lossWeights: 'loss_weights', // [K] (padding: 0)
  lossSum: 'loss_sum', // [] Σ w·ce
  correctSum: 'correct_sum', // [] Σ w·[argmax = label]
  weightSum: 'weight_sum', // [] total loss weight of the accumulated micro-batches
  lr: 'lr', // []
  step: 'step', // [] 1-based AdamW step
  maxGradNorm: 'max_grad_norm', // [] clip threshold (≤ 0: no clipping)
  gradNorm: 'grad_norm', // [] global norm before clipping
  dropoutMask: (module: number) => `dropout_mask:${module}`, // [N, in] bool: LoRA module j's keep-mask (loraModules order); grad graphs with dropout only
  referenceLogps: 'reference_logps', // [B] DPO: each row's summed output log-probability under the reference model
  beta: 'beta', // [] DPO: the reward scale β
  rpoAlpha: 'rpo_alpha', // [] DPO: weight α of the preferred outputs' NLL term (RPO) in the optimised objective
  preferredNllSum: 'preferred_nll_sum', // [] DPO: Σ over pairs of the preferred output's mean per-token NLL
  sequenceLogps: 'sequence_logps', // [B] DPO: each row's summed output log-probability under base + adapter
  rewardCorrectSum: 'reward_correct_sum', // [] DPO: pairs whose chosen reward beats the rejected one
  rewardMarginSum: 'reward_margin_sum', // [] DPO: Σ (chosen reward − rejected reward)
  grad: (name: string) => `grad:${name}`,
  // The AdamW graph's vectors [P]: every LoRA tensor flattened, concatenated in loraSpecs order.
  params: 'params',
  grads: 'grads', // Σ over the micro-batches (unnormalised)
  m: 'm',
  v: 'v',
  nextParams: 'next_params',
  nextM: 'next_m',
  nextV: 'next_v',
};

/** LoRA tensors (PEFT names, A [R, in], B [out, R]) in the fixed module order. */
export function loraSpecs(config: ModelConfig, lora: LoraConfig): ParameterSpec[] {
  return loraParameters(config, lora.targetModules, lora.r);
}

/** Options shared by the graph builders (all part of a cached graph's key). */
export interface GraphOptions {
  dtype?: FloatDType; // default float32; float64 for finite-difference tests
  attentionBlock?: number; // see ForwardInputs.attentionBlock
}

/**
 * Declares every LoRA tensor as a graph input (PEFT names) and returns the projection hook: the update
 * (alpha/R)·dropout(x)·Aᵀ·Bᵀ (+ the addend), two thin Gemms (the second takes the addend as its C).
 * `training` with lora.dropout > 0 applies dropout with keep-masks given as inputs (dropout_mask:<j>), so the caller
 * draws them (from the job seed and the step: fillKeepMask) and a resumed run replays them; eval and serving pass false.
 */
export function loraGraphInputs(g: Graph, config: ModelConfig, lora: LoraConfig, training: boolean): { inputs: Map<string, Tensor>; linear: LinearHook } {
  const inputs = new Map(loraSpecs(config, lora).map((s) => [s.name, g.input(s.name, g.float, s.dims)]));
  const list = loraModules(config, lora.targetModules);
  const modules = new Map(list.map((m, j) => [`${m.layer}.${m.target}`, { ...m, j }]));
  const dropout = training && lora.dropout > 0;
  const linear: LinearHook = (layer, target, x, addend) => {
    const m = modules.get(`${layer}.${target}`);
    if (!m) return null;
    // dropout(x) = keep·x/(1 − p); the 1/(1 − p) rides on the second Gemm's alpha. A Mul by the mask, as ORT's Where is ~4× slower.
    const xd = dropout ? op.mul(x, op.cast(g.input(IO.dropoutMask(m.j), 'bool', x.shape), x.dtype)) : x; // [N, in]
    const xa = op.gemm(xd, inputs.get(m.loraA)!, null, { transB: true }); // [N, R]
    return op.gemm(xa, inputs.get(m.loraB)!, addend, { transB: true, alpha: loraScaling(lora) / (dropout ? 1 - lora.dropout : 1) }); // [N, out]
  };
  return { inputs, linear };
}

/** The batch inputs and the forward pass shared by the loss graphs: per-row weighted losses of the rows that reach the LM head. */
function weightedRowsForward(g: Graph, config: ModelConfig, weights: WeightFactory, lora: LoraConfig, bucket: Bucket, training: boolean, o: GraphOptions) {
  const { rows: B, seqLen: T, lossRows: K } = bucket;
  const weight = weights(g);
  const ids = g.input(IO.inputIds, 'int32', [B, T]); // [B, T]
  const bias = g.input(IO.attentionBias, g.float, [B, 1, 1, T, T]); // [B, 1, 1, T, T]
  const rowIdx = g.input(IO.lossRows, 'int64', [K]); // [K]
  const labels = g.input(IO.lossLabels, 'int64', [K]); // [K]
  const lossW = g.input(IO.lossWeights, g.float, [K]); // [K]
  const { inputs: loraInputs, linear } = loraGraphInputs(g, config, lora, training);
  const x = decoderStack(config, weight, { inputIds: ids, attentionBias: bias, rope: staticRopeTables(g, config, B, T), linear, attentionBlock: o.attentionBlock }); // [N, D]
  const h = finalNorm(config, weight, op.gather(x, rowIdx, 0)); // [K, D]
  const { rowLoss, rowCorrect } = lmHeadLoss(config, weight, h, labels, lossW); // [K], [K]
  return { loraInputs, rowIdx, rowLoss, rowCorrect, lossW };
}

/** grad:<name> = ∂root/∂tensor for every LoRA tensor, as graph outputs. */
function loraGradientOutputs(root: Tensor, loraInputs: Map<string, Tensor>): void {
  const names = [...loraInputs.keys()];
  const grads = gradients(
    root,
    names.map((n) => loraInputs.get(n)!),
  );
  grads.forEach((d, i) => root.graph.output(d, IO.grad(names[i])));
}

/**
 * One micro-batch's loss graph. kind 'grad': outputs loss_sum, correct_sum and, for every LoRA
 * tensor, grad:<name> = ∂loss_sum/∂tensor (unnormalised, so micro-batches add up), with LoRA dropout
 * seeded by the dropout_seeds input. kind 'eval': loss_sum and correct_sum only, no dropout.
 */
export function buildLossGraph(kind: 'grad' | 'eval', config: ModelConfig, weights: WeightFactory, lora: LoraConfig, bucket: Bucket, o: GraphOptions = {}): Graph {
  const g = new Graph(`localtune-${kind}`, o.dtype ?? 'float32');
  const { loraInputs, rowLoss, rowCorrect } = weightedRowsForward(g, config, weights, lora, bucket, kind === 'grad', o);
  const lossSum = op.reduceSum(rowLoss, [0]); // [] Σ w·ce
  if (kind === 'grad') loraGradientOutputs(lossSum, loraInputs);
  g.output(lossSum, IO.lossSum);
  g.output(op.reduceSum(rowCorrect, [0]), IO.correctSum);
  return g;
}

/**
 * One DPO micro-batch: rows 2p and 2p+1 are pair p's preferred and non-preferred sequence (P = B/2 pairs).
 * Per sequence, π = Σ log p(token) over its weighted (assistant output) tokens under base + adapter;
 * with the reference log-probabilities ref (an input: computed once per pair) and β (an input),
 *   z_p = β·((π_c − ref_c) − (π_r − ref_r))    (the reward margin: chosen reward minus rejected reward)
 *   loss_sum = Σ_p −log σ(z_p)                 (as −logsoftmax([0, z])₁, which stays finite for any z)
 * Outputs loss_sum, reward_correct_sum = Σ [z > 0], reward_margin_sum = Σ z, correct_sum (Σ argmax hits on
 * the preferred outputs' tokens), sequence_logps [B] (π per row), preferred_nll_sum = Σ_p −π_c/n_c (n_c the preferred
 * output's trained tokens), and with kind 'grad' grad:<name> = ∂(loss_sum + α·preferred_nll_sum)/∂tensor: RPO's
 * objective (Pang et al. 2024; TRL's rpo_alpha), whose NLL term keeps the preferred outputs likely while DPO separates them.
 * The eval graph (no dropout) fed the reference adapter gives the reference log-probabilities as its sequence_logps.
 */
export function buildDpoGraph(kind: 'grad' | 'eval', config: ModelConfig, weights: WeightFactory, lora: LoraConfig, bucket: Bucket, o: GraphOptions = {}): Graph {
  const { rows: B, seqLen: T } = bucket;
  if (B % 2 !== 0) throw new Error(`a DPO micro-batch holds pairs of rows, got ${B} rows`);
  const P = B / 2;
  const g = new Graph(`localtune-dpo-${kind}`, o.dtype ?? 'float32');
  const { loraInputs, rowIdx, rowLoss, rowCorrect, lossW } = weightedRowsForward(g, config, weights, lora, bucket, kind === 'grad', o);
  const reference = g.input(IO.referenceLogps, g.float, [B]); // [B]
  const beta = g.input(IO.beta, g.float, []); // []
  // Which sequence each head row belongs to: flat row b·T + t → b (padding rows carry weight 0, so their loss is 0).
  const sequence = op.div(rowIdx, g.constant([T], 'int64', [])); // [K] int64
  const rowsOfSequence = op.cast(op.equal(op.unsqueeze(sequence, [1]), g.constant(Array.from({ length: B }, (_, b) => b), 'int64', [1, B])), g.float); // [K, B] one-hot
  const logps = op.neg(op.reshape(op.matmul(op.unsqueeze(rowLoss, [0]), rowsOfSequence), [B])); // [B] π = −Σ w·ce
  const rewards = op.mul(op.reshape(op.sub(logps, reference), [P, 2]), beta); // [P, 2] β(π − ref)
  const [chosen, rejected] = op.split(rewards, [1, 1], 1); // [P, 1] ×2
  const z = op.sub(chosen, rejected); // [P, 1]
  const logSigmoid = op.slice(op.logSoftmax(op.concat([op.zeros(g, [P, 1], g.float), z], 1), 1), [1], [2], [1]); // [P, 1] log σ(z)
  const lossSum = op.neg(op.reduceSum(logSigmoid, [0, 1])); // []
  const tokens = op.reshape(op.matmul(op.unsqueeze(lossW, [0]), rowsOfSequence), [P, 2]); // [P, 2] n: trained tokens per sequence
  const [chosenLogps] = op.split(op.reshape(logps, [P, 2]), [1, 1], 1); // [P, 1] π_c
  const [chosenTokens] = op.split(tokens, [1, 1], 1); // [P, 1] n_c
  const nllSum = op.neg(op.reduceSum(op.div(chosenLogps, op.max(chosenTokens, g.scalar(1))), [0, 1])); // [] Σ_p −π_c/n_c
  if (kind === 'grad') loraGradientOutputs(op.add(lossSum, op.mul(g.input(IO.rpoAlpha, g.float, []), nllSum)), loraInputs); // α: [] input of the grad graph
  g.output(lossSum, IO.lossSum);
  g.output(nllSum, IO.preferredNllSum);
  g.output(op.reduceSum(op.cast(op.greater(z, g.scalar(0)), g.float), [0, 1]), IO.rewardCorrectSum);
  g.output(op.reduceSum(z, [0, 1]), IO.rewardMarginSum);
  const correctPerSequence = op.reshape(op.matmul(op.unsqueeze(rowCorrect, [0]), rowsOfSequence), [B]); // [B]
  const preferred = g.constant(Array.from({ length: B }, (_, b) => (b % 2 === 0 ? 1 : 0)), g.float, [B]); // [B]
  g.output(op.reduceSum(op.mul(correctPerSequence, preferred), [0]), IO.correctSum);
  g.output(logps, IO.sequenceLogps);
  return g;
}

/**
 * Logits for every position [B·T, V] (verification and the step-0 check): inputs input_ids and
 * attention_bias, plus the LoRA tensors when `lora` is given (no dropout). Output `logits`.
 */
export function buildLogitsGraph(config: ModelConfig, weights: WeightFactory, lora: LoraConfig | null, rows: number, seqLen: number, o: GraphOptions = {}): Graph {
  const dtype = o.dtype ?? 'float32';
  const g = new Graph('localtune-logits', dtype);
  const weight = weights(g);
  const ids = g.input(IO.inputIds, 'int32', [rows, seqLen]); // [B, T]
  const bias = g.input(IO.attentionBias, dtype, [rows, 1, 1, seqLen, seqLen]); // [B, 1, 1, T, T]
  const linear = lora ? loraGraphInputs(g, config, lora, false).linear : undefined;
  const x = decoderStack(config, weight, { inputIds: ids, attentionBias: bias, rope: staticRopeTables(g, config, rows, seqLen), linear, attentionBlock: o.attentionBlock }); // [N, D]
  g.output(lmHead(config, weight, finalNorm(config, weight, x)), 'logits'); // [N, V]
  return g;
}

/**
 * The optimizer step over accumulated gradients, on all LoRA tensors at once as [P] vectors (one kernel per
 * operation instead of one per tensor): g = grads/weight_sum; global norm; clip to max_grad_norm; AdamW with
 * bias correction and decoupled weight decay. Outputs next_params, next_m, next_v and grad_norm.
 */
export function buildAdamWGraph(size: number, o: AdamWOptions, dtype: FloatDType = 'float32'): Graph {
  const g = new Graph('localtune-adamw', dtype);
  const weightSum = g.input(IO.weightSum, dtype, []); // []
  const lr = g.input(IO.lr, dtype, []); // []
  const step = g.input(IO.step, dtype, []); // []
  const maxNorm = g.input(IO.maxGradNorm, dtype, []); // []
  const param = g.input(IO.params, dtype, [size]); // [P]
  const m0 = g.input(IO.m, dtype, [size]); // [P]
  const v0 = g.input(IO.v, dtype, [size]); // [P]
  const s = (v: number) => g.scalar(v);
  const grad = op.mul(g.input(IO.grads, dtype, [size]), op.reciprocal(op.max(weightSum, s(1e-12)))); // [P] mean-loss gradient
  const norm = op.sqrt(op.reduceSum(op.mul(grad, grad), [0])); // []
  // coef = max_norm / max(norm, max_norm) (= 1 when not clipping); max_norm ≤ 0 disables clipping.
  const coef = op.where(op.greater(maxNorm, s(0)), op.div(maxNorm, op.max(norm, maxNorm)), s(1)); // []
  const bc1 = op.sub(s(1), op.pow(s(o.beta1), step)); // [] 1 − β1ᵗ
  const bc2 = op.sub(s(1), op.pow(s(o.beta2), step)); // [] 1 − β2ᵗ
  const decay = op.sub(s(1), op.mul(lr, s(o.weightDecay))); // [] 1 − lr·wd
  const gc = op.mul(grad, coef); // [P] clipped gradient
  const m = op.add(op.mul(m0, s(o.beta1)), op.mul(gc, s(1 - o.beta1))); // β1·m + (1−β1)·g
  const v = op.add(op.mul(v0, s(o.beta2)), op.mul(op.mul(gc, gc), s(1 - o.beta2))); // β2·v + (1−β2)·g²
  const update = op.div(op.div(m, bc1), op.add(op.sqrt(op.div(v, bc2)), s(o.eps))); // m̂/(√v̂ + ε)
  g.output(op.sub(op.mul(param, decay), op.mul(lr, update)), IO.nextParams); // p·(1 − lr·wd) − lr·update
  g.output(m, IO.nextM);
  g.output(v, IO.nextV);
  g.output(norm, IO.gradNorm);
  return g;
}
