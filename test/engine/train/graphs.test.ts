// The training graphs on tiny float64 models: whole-step finite differences, step 0 = base model, AdamW against a JS reference.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import type { ModelConfig } from '../../../src/engine/models/config.ts';
import { attentionBias } from '../../../src/engine/models/llama.ts';
import type { Graph } from '../../../src/engine/onnx/graph.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { batchFeeds, bucketOf } from '../../../src/engine/train/feeds.ts';
import { embeddedWeights } from '../../../src/engine/models/weight-source.ts';
import { buildAdamWGraph, buildLogitsGraph, buildLossGraph, IO, loraSpecs } from '../../../src/engine/train/graphs.ts';
import type { LoraConfig } from '../../../src/engine/lora/config.ts';
import { loraModules } from '../../../src/engine/models/parameters.ts';
import { fillKeepMask } from '../../../src/engine/random.ts';
import { randomBatch, randomTensors, randomWeights, tinyConfig } from '../fixtures.ts';

const allTargets: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };

const f64 = (data: Float64Array, dims: number[]) => new ort.Tensor('float64', data, dims);

async function session(g: Graph) {
  return createSession(g.serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });
}

async function stepFd(config: ModelConfig, lora: LoraConfig, attentionBlock?: number) {
  const weights = embeddedWeights(randomWeights(config, 7));
  const batch = randomBatch(config.vocabSize, 8, [8, 5], 3);
  const bucket = bucketOf(batch);
  const s = await session(buildLossGraph('grad', config, weights, lora, bucket, { dtype: 'float64', attentionBlock }));
  const specs = loraSpecs(config, lora);
  const values = randomTensors(specs, 11, 0.3);
  const feeds = (vals: Map<string, Float64Array>) => {
    const f = batchFeeds(batch, bucket, 'float64');
    for (const p of specs) f[p.name] = f64(vals.get(p.name)!, p.dims);
    // With dropout: one fixed keep-mask per module, so every run of the finite differences sees the same masks.
    if (lora.dropout > 0) {
      loraModules(config, lora.targetModules).forEach((m, j) => {
        const rows = batch.rows * batch.seqLen;
        f[IO.dropoutMask(j)] = new ort.Tensor('bool', fillKeepMask(new Uint8Array(rows * m.in), 100 + j, lora.dropout), [rows, m.in]);
      });
    }
    return f;
  };
  const base = await s.run(feeds(values));
  const eps = 1e-6;
  let checked = 0;
  for (const [i, p] of specs.entries()) {
    const analytic = base[IO.grad(p.name)].data as Float64Array;
    assert.equal(analytic.length, values.get(p.name)!.length);
    // Three entries per tensor keep this fast; every tensor (every layer and module, A and B) is covered.
    for (const j of [0, (i * 7) % analytic.length, analytic.length - 1]) {
      const at = (d: number) => new Map([...values].map(([k, v]) => [k, k === p.name ? v.map((x, q) => (q === j ? x + d : x)) : v]));
      const lp = ((await s.run(feeds(at(eps))))[IO.lossSum].data as Float64Array)[0];
      const lm = ((await s.run(feeds(at(-eps))))[IO.lossSum].data as Float64Array)[0];
      const numeric = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(numeric - analytic[j]) < 1e-6 * Math.max(1, Math.abs(numeric)), `${p.name}[${j}]: autodiff ${analytic[j]} vs FD ${numeric}`);
      checked++;
    }
  }
  await s.close();
  return checked;
}

test('whole train step: LoRA gradients match finite differences (Llama, GQA, untied)', async () => {
  assert.ok((await stepFd(tinyConfig(), allTargets)) > 0);
});

test('whole train step with LoRA dropout (keep-masks as inputs): gradients match finite differences', async () => {
  assert.ok((await stepFd(tinyConfig({ num_hidden_layers: 1 }), { ...allTargets, dropout: 0.3 })) > 0);
});

test('whole train step with blocked causal attention (2 query blocks of 4): gradients match finite differences', async () => {
  assert.ok((await stepFd(tinyConfig({ num_hidden_layers: 1 }), allTargets, 4)) > 0);
});

test('whole train step: LoRA gradients match finite differences (Qwen2, q/k/v bias, tied, llama3 rope)', async () => {
  const config = tinyConfig({
    architectures: ['Qwen2ForCausalLM'],
    tie_word_embeddings: true,
    num_hidden_layers: 1,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  });
  assert.ok((await stepFd(config, { ...allTargets, targetModules: ['q_proj', 'v_proj', 'down_proj'] })) > 0);
});

test('the frozen base gets no gradient: every weight-gradient Gemm (transA) yields a LoRA-shaped tensor', () => {
  const config = tinyConfig();
  const batch = randomBatch(config.vocabSize, 8, [8, 5], 3);
  const g = buildLossGraph('grad', config, embeddedWeights(randomWeights(config, 7)), allTargets, bucketOf(batch), { dtype: 'float64' });
  const flat = (nodes: typeof g.nodes): typeof g.nodes => nodes.flatMap((n) => (n.body ? flat(n.body) : [n]));
  const weightGrads = flat(g.nodes).filter((n) => n.op === 'Gemm' && n.attrs.transA);
  assert.equal(weightGrads.length, loraSpecs(config, allTargets).length, 'one weight-gradient Gemm per LoRA tensor');
  for (const n of weightGrads) assert.ok(n.outputs[0].shape.includes(allTargets.r), `a base-weight gradient: ${n.outputs[0]}`);
});

test('step 0 of a fresh adapter (B = 0) reproduces the base logits exactly', async () => {
  const config = tinyConfig();
  const weights = embeddedWeights(randomWeights(config, 7));
  const [B, T] = [2, 8];
  const batch = randomBatch(config.vocabSize, T, [8, 6], 5);
  const common = {
    [IO.inputIds]: new ort.Tensor('int32', batch.inputIds, [B, T]),
    [IO.attentionBias]: f64(Float64Array.from(attentionBias(B, T, batch.attentionMask)), [B, 1, 1, T, T]),
  };
  const base = await session(buildLogitsGraph(config, weights, null, B, T, { dtype: 'float64' }));
  const tuned = await session(buildLogitsGraph(config, weights, allTargets, B, T, { dtype: 'float64' }));
  const feeds: Record<string, ort.Tensor> = { ...common };
  for (const p of loraSpecs(config, allTargets)) {
    const isA = p.name.includes('lora_A');
    feeds[p.name] = f64(randomTensors([p], 1, isA ? 0.5 : 0).get(p.name)!, p.dims);
  }
  const a = (await base.run(common)).logits.data as Float64Array;
  const b = (await tuned.run(feeds)).logits.data as Float64Array;
  assert.equal(a.length, B * T * config.vocabSize);
  assert.deepEqual(b, a);
});

test('blocked causal attention gives the same logits as full T×T attention', async () => {
  const config = tinyConfig();
  const weights = embeddedWeights(randomWeights(config, 7));
  const [B, T] = [2, 8];
  const batch = randomBatch(config.vocabSize, T, [8, 5], 5);
  const feeds = {
    [IO.inputIds]: new ort.Tensor('int32', batch.inputIds, [B, T]),
    [IO.attentionBias]: f64(Float64Array.from(attentionBias(B, T, batch.attentionMask)), [B, 1, 1, T, T]),
  };
  const full = await session(buildLogitsGraph(config, weights, null, B, T, { dtype: 'float64', attentionBlock: 0 }));
  const blocked = await session(buildLogitsGraph(config, weights, null, B, T, { dtype: 'float64', attentionBlock: 2 }));
  const a = (await full.run(feeds)).logits.data as Float64Array;
  const b = (await blocked.run(feeds)).logits.data as Float64Array;
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-12, `logit ${i}: ${v} vs ${b[i]}`));
});

test('AdamW graph: clipping, bias correction and decoupled weight decay match a scalar reference', async () => {
  const o = { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 };
  const s = await session(buildAdamWGraph(3, o, 'float64'));
  const p = [0.5, -1, 2];
  const grad = [3, -4, 12]; // Σ over micro-batches; weight_sum 2 → mean grad [1.5, -2, 6], norm 6.5
  const m = [0.1, 0, -0.2];
  const v = [0.01, 0.02, 0];
  const [lr, step, maxNorm, wsum] = [0.01, 3, 1, 2];
  const out = await s.run({
    [IO.params]: f64(Float64Array.from(p), [3]),
    [IO.grads]: f64(Float64Array.from(grad), [3]),
    [IO.m]: f64(Float64Array.from(m), [3]),
    [IO.v]: f64(Float64Array.from(v), [3]),
    [IO.weightSum]: f64(Float64Array.of(wsum), []),
    [IO.lr]: f64(Float64Array.of(lr), []),
    [IO.step]: f64(Float64Array.of(step), []),
    [IO.maxGradNorm]: f64(Float64Array.of(maxNorm), []),
  });
  const norm = Math.hypot(...grad.map((x) => x / wsum));
  assert.ok(Math.abs((out[IO.gradNorm].data as Float64Array)[0] - norm) < 1e-12);
  const coef = maxNorm / norm;
  p.forEach((pi, i) => {
    const gi = (grad[i] / wsum) * coef;
    const mi = 0.9 * m[i] + 0.1 * gi;
    const vi = 0.99 * v[i] + 0.01 * gi * gi;
    const next = pi * (1 - lr * o.weightDecay) - (lr * (mi / (1 - 0.9 ** step))) / (Math.sqrt(vi / (1 - 0.99 ** step)) + o.eps);
    assert.ok(Math.abs((out[IO.nextParams].data as Float64Array)[i] - next) < 1e-12, `p[${i}]`);
    assert.ok(Math.abs((out[IO.nextM].data as Float64Array)[i] - mi) < 1e-12, `m[${i}]`);
    assert.ok(Math.abs((out[IO.nextV].data as Float64Array)[i] - vi) < 1e-12, `v[${i}]`);
  });
});
