// Fused ops: ONNX subgraphs that autodiff treats as one node with a hand-derived VJP (fewer, cheaper backward nodes).
import { attrFloat, attrInt, type Tensor } from './graph.ts';
import * as op from './ops.ts';

// Dims: N rows, D width, V vocabulary, C rows per chunk.

/** RMSNorm over the last axis: y = x·r·w, r = 1/√(mean(x²) + eps). x [N, D], w [D]. */
export function rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
  return x.graph.fuse('RmsNorm', [x, w], { epsilon: attrFloat(eps) }, () => {
    const g = x.graph;
    const ms = op.reduceMean(op.mul(x, x), [-1], true); // [N, 1]
    const r = op.reciprocal(op.sqrt(op.add(ms, g.scalar(eps, x.dtype)))); // [N, 1]
    const xh = op.mul(x, r); // [N, D]
    const y = op.mul(xh, w); // [N, D]
    return { outputs: [y], saved: { r, xh } };
  })[0];
}

/** SwiGLU: h = silu(gate)·up, silu(a) = a·σ(a). gate, up [N, F]. */
export function swiGlu(gate: Tensor, up: Tensor): Tensor {
  return gate.graph.fuse('SwiGlu', [gate, up], {}, () => {
    const s = op.sigmoid(gate); // [N, F]
    const silu = op.mul(gate, s); // [N, F]
    const h = op.mul(silu, up); // [N, F]
    return { outputs: [h], saved: { s, silu } };
  })[0];
}

/**
 * Rotary position embedding in Hugging Face's rotate_half layout, per head: with x1, x2 the halves of a head,
 * y = [x1·c − x2·s, x2·c + x1·s]. x [B, T, H·HD]; cos, sin [B, T, HD/2] (both may carry one scale factor, e.g.
 * attention's 1/√HD). float32 runs ONNX's RotaryEmbedding (opset 23), one pass where the composition takes five;
 * float64, which ORT has no RotaryEmbedding kernel for (finite-difference tests), the same rotation composed.
 */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor, numHeads: number): Tensor {
  const g = x.graph;
  const attrs = { num_heads: attrInt(numHeads) };
  return g.fuse('Rotary', [x, cos, sin], attrs, () => {
    if (x.dtype === 'float32') return { outputs: g.emit('RotaryEmbedding', [x, cos, sin], attrs, [[x.dtype, x.shape]]) };
    const HD = (x.shape[2] as number) / numHeads;
    const heads = op.reshape(x, [[x, 0], [x, 1], numHeads, HD]); // [B, T, H, HD]
    const [x1, x2] = op.split(heads, [HD / 2, HD / 2], -1); // [B, T, H, HD/2] ×2
    const c = op.unsqueeze(cos, [2]); // [B, T, 1, HD/2]
    const s = op.unsqueeze(sin, [2]); // [B, T, 1, HD/2]
    const y = op.concat([op.sub(op.mul(x1, c), op.mul(x2, s)), op.add(op.mul(x2, c), op.mul(x1, s))], -1); // [B, T, H, HD]
    return { outputs: [op.reshapeTo(y, x)] }; // [B, T, H·HD]
  })[0];
}

/**
 * Attention's core, softmax(q·kᵀ + bias)·v, for queries folded as [B, H, M, HD] against keys kᵀ [B, H, HD, S] and
 * values [B, H, S, HD]. The scores [B, H, M, S] are viewed as `scoreShape` to add `bias` (which gets no gradient).
 * Returns [B, H, M, HD]; the probabilities are saved for the backward pass.
 */
export function attention(q: Tensor, kt: Tensor, v: Tensor, bias: Tensor, scoreShape: (number | [Tensor, number])[]): Tensor {
  return q.graph.fuse('Attention', [q, kt, v, bias], {}, () => {
    const scores = op.matmul(q, kt); // [B, H, M, S]
    const masked = op.add(op.reshape(scores, scoreShape), bias); // scoreShape
    const probs = op.reshapeTo(op.softmax(masked, -1), scores); // [B, H, M, S]
    return { outputs: [op.matmul(probs, v)], saved: { probs } }; // [B, H, M, HD]
  })[0];
}

/**
 * LM head + weighted cross-entropy over rows in chunks of `chunk`, so that [N, V] logits never
 * exist whole. h [N, D], w [V, D] (HF layout) or its rows in blocks [V_b, D] (a quantized head is dequantized a
 * block at a time), labels [N] int64, weights [N].
 * Outputs per row (so a supervised loss can sum them all and DPO can sum them per sequence):
 * rowLoss [N] = weights·ce and rowCorrect [N] = weights·[argmax = label].
 * Each row's gradient ∂rowLoss_n/∂h_n = weights_n·(softmax − onehot)·W is formed in the same pass
 * (saved as `dh` [N, D]) so no chunk's logits outlive it; the VJP only scales row n by rowLoss_n's upstream gradient.
 */
export function lmHeadCrossEntropy(h: Tensor, w: Tensor | Tensor[], labels: Tensor, weights: Tensor, chunk: number): { rowLoss: Tensor; rowCorrect: Tensor } {
  const g = h.graph;
  const [N, D] = h.shape as number[];
  const blocks = Array.isArray(w) ? w : [w]; // [V_b, D] each
  if (blocks.some((b) => b.shape[1] !== D) || labels.shape[0] !== N || weights.shape[0] !== N) throw new Error(`LmHeadCrossEntropy: shapes ${h} ${blocks.join(' ')} ${labels} ${weights}`);
  const outs = g.fuse('LmHeadCrossEntropy', [h, labels, weights, ...blocks], { chunk: attrInt(chunk) }, () => {
    const losses: Tensor[] = [];
    const corrects: Tensor[] = [];
    const grads: Tensor[] = [];
    for (let s = 0; s < N; s += chunk) {
      const e = Math.min(s + chunk, N);
      const hc = N <= chunk ? h : op.slice(h, [s], [e], [0]); // [C, D]
      const lc = N <= chunk ? labels : op.slice(labels, [s], [e], [0]); // [C]
      const wc = N <= chunk ? weights : op.slice(weights, [s], [e], [0]); // [C]
      const wc1 = op.unsqueeze(wc, [1]); // [C, 1]
      const logits = joined(blocks.map((b) => op.gemm(hc, b, null, { transB: true })), 1); // [C, V]
      const ls = op.logSoftmax(logits, 1); // [C, V]
      const lab = op.unsqueeze(lc, [1]); // [C, 1]
      const picked = op.gatherElements(ls, lab, 1); // [C, 1]  log p(label)
      losses.push(op.neg(op.mul(op.squeeze(picked, [1]), wc))); // [C]  w·ce
      // ∂ce/∂logits = softmax − onehot: write p(label) − 1 over p at the label (no [C, V] one-hot);
      // the row weights scale the [C, D] product instead of the [C, V] one.
      const pMinusOnehot = op.scatterElements(op.exp(ls), lab, op.sub(op.exp(picked), g.scalar(1, h.dtype)), 1); // [C, V]
      const parts = blocks.length === 1 ? [pMinusOnehot] : op.split(pMinusOnehot, blocks.map((b) => b.shape[0] as number), 1); // [C, V_b] each
      grads.push(op.mul(parts.reduce<Tensor | null>((sum, p, b) => op.gemm(p, blocks[b], sum), null)!, wc1)); // [C, D]  Σ_b P_b·W_b
      // A hit: the label's logit is the row's largest (a tie counts); ReduceMax, as ArgMax measured ~9× slower at a 49k vocabulary.
      const hit = op.cast(op.equal(op.squeeze(op.gatherElements(logits, lab, 1), [1]), op.reduceMax(logits, [1])), h.dtype); // [C]
      corrects.push(op.mul(hit, wc)); // [C]
    }
    return { outputs: [joined(losses, 0), joined(corrects, 0)], saved: { dh: joined(grads, 0) } }; // [N], [N], [N, D]
  });
  return { rowLoss: outs[0], rowCorrect: outs[1] };
}

/** The tensors concatenated along `axis`, or the one tensor itself. */
function joined(ts: Tensor[], axis: number): Tensor {
  return ts.length === 1 ? ts[0] : op.concat(ts, axis);
}
