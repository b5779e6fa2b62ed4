// The forward with symbolic dims and a KV cache (the generation door): prefill + one decode step equal the full-sequence logits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { attentionBias, decoderStack, dynamicRopeTables, finalNorm, lmHead, perRowLoraHook } from '../../../src/engine/models/llama.ts';
import { loraModules } from '../../../src/engine/models/parameters.ts';
import { Graph } from '../../../src/engine/onnx/graph.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { embeddedWeights } from '../../../src/engine/models/weight-source.ts';
import { buildLogitsGraph, IO, loraSpecs } from '../../../src/engine/train/graphs.ts';
import { randomBatch, randomTensors, randomWeights, tinyConfig } from '../fixtures.ts';

test('symbolic-dim forward with past K/V: prefill then one decode step reproduce the full logits', async () => {
  const config = tinyConfig({ architectures: ['Qwen2ForCausalLM'] });
  const weights = embeddedWeights(randomWeights(config, 3));
  const { numLayers: L, numKvHeads: NKV, headDim: HD, vocabSize: V } = config;
  const g = new Graph('gen', 'float64');
  const weight = weights(g);
  const ids = g.input('input_ids', 'int64', ['batch', 'new']); // [B, T]
  const pos = g.input('position_ids', 'int64', ['batch', 'new']); // [B, T]
  const bias = g.input('attention_bias', 'float64', ['batch', 1, 1, 'new', 'keys']); // [B, 1, 1, T, S]
  const past = Array.from({ length: L }, (_, l) => ({
    key: g.input(`past_key_${l}`, 'float64', ['batch', NKV, 'past', HD]),
    value: g.input(`past_value_${l}`, 'float64', ['batch', NKV, 'past', HD]),
  }));
  const x = decoderStack(config, weight, {
    inputIds: ids,
    attentionBias: bias,
    rope: dynamicRopeTables(config, pos),
    kv: {
      past: (l) => past[l],
      present: (l, k, v) => {
        g.output(k, `present_key_${l}`);
        g.output(v, `present_value_${l}`);
      },
    },
  });
  g.output(lmHead(config, weight, finalNorm(config, weight, x)), 'logits');
  const gen = await createSession(g.serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });

  const T = 7;
  const batch = randomBatch(V, T, [T], 9);
  const full = await createSession(buildLogitsGraph(config, weights, null, 1, T, { dtype: 'float64' }).serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });
  const expected = (
    await full.run({
      [IO.inputIds]: new ort.Tensor('int32', batch.inputIds, [1, T]),
      [IO.attentionBias]: new ort.Tensor('float64', Float64Array.from(attentionBias(1, T, batch.attentionMask)), [1, 1, 1, T, T]),
    })
  ).logits.data as Float64Array;

  const i64 = (xs: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), [1, xs.length]);
  const empty = new ort.Tensor('float64', new Float64Array(0), [1, NKV, 0, HD]);
  const P = T - 1;
  const prefillFeeds: Record<string, ort.Tensor> = {
    input_ids: i64(Array.from(batch.inputIds.slice(0, P))),
    position_ids: i64(Array.from({ length: P }, (_, i) => i)),
    attention_bias: new ort.Tensor('float64', Float64Array.from(attentionBias(1, P, new Float32Array(P).fill(1))), [1, 1, 1, P, P]),
  };
  for (let l = 0; l < L; l++) Object.assign(prefillFeeds, { [`past_key_${l}`]: empty, [`past_value_${l}`]: empty });
  const pre = await gen.run(prefillFeeds);
  const decodeFeeds: Record<string, ort.Tensor> = {
    input_ids: i64([batch.inputIds[P]]),
    position_ids: i64([P]),
    attention_bias: new ort.Tensor('float64', Float64Array.from(attentionBias(1, 1, new Float32Array(T).fill(1), P)), [1, 1, 1, 1, T]),
  };
  for (let l = 0; l < L; l++) Object.assign(decodeFeeds, { [`past_key_${l}`]: pre[`present_key_${l}`], [`past_value_${l}`]: pre[`present_value_${l}`] });
  const step = await gen.run(decodeFeeds);
  const got = [...(pre.logits.data as Float64Array), ...(step.logits.data as Float64Array)];
  assert.equal(got.length, T * V);
  got.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-9, `logit ${i}: ${v} vs ${expected[i]}`));
  await Promise.all([gen.close(), full.close()]);
});

test('per-row adapters: a mixed batch equals each row run alone (adapter row vs. base row)', async () => {
  const config = tinyConfig();
  const weights = embeddedWeights(randomWeights(config, 3));
  const lora = { r: 2, alpha: 6, dropout: 0, targetModules: ['q_proj' as const, 'v_proj' as const, 'down_proj' as const] };
  const specs = loraSpecs(config, lora);
  const values = randomTensors(specs, 4, 0.3);
  const T = 6;
  const batch = randomBatch(config.vocabSize, T, [T, T], 8);
  const row = (b: number) => batch.inputIds.slice(b * T, (b + 1) * T);
  const bias1 = Float64Array.from(attentionBias(1, T, new Float32Array(T).fill(1)));
  const solo = async (lo: typeof lora | null, b: number) => {
    const s = await createSession(buildLogitsGraph(config, weights, lo, 1, T, { dtype: 'float64' }).serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });
    const feeds: Record<string, ort.Tensor> = { [IO.inputIds]: new ort.Tensor('int32', row(b), [1, T]), [IO.attentionBias]: new ort.Tensor('float64', bias1, [1, 1, 1, T, T]) };
    if (lo) for (const p of specs) feeds[p.name] = new ort.Tensor('float64', values.get(p.name)!, p.dims);
    const out = (await s.run(feeds)).logits.data as Float64Array;
    await s.close();
    return out;
  };
  const expected = [...(await solo(lora, 0)), ...(await solo(null, 1))];

  const g = new Graph('serve', 'float64');
  const weight = weights(g);
  const ids = g.input('input_ids', 'int64', ['batch', 'new']);
  const pos = g.input('position_ids', 'int64', ['batch', 'new']);
  const bias = g.input('attention_bias', 'float64', ['batch', 1, 1, 'new', 'new']);
  const modules = loraModules(config, lora.targetModules);
  const ab = new Map(modules.map((m) => [`${m.layer}.${m.target}`, { a: g.input(`a.${m.layer}.${m.target}`, 'float64', ['batch', m.in, 2]), b: g.input(`b.${m.layer}.${m.target}`, 'float64', ['batch', 2, m.out]) }]));
  const x = decoderStack(config, weight, { inputIds: ids, attentionBias: bias, rope: dynamicRopeTables(config, pos), linear: perRowLoraHook(ids, (l, t) => ab.get(`${l}.${t}`) ?? null) });
  g.output(lmHead(config, weight, finalNorm(config, weight, x)), 'logits');
  const s = await createSession(g.serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(batch.inputIds, (v) => BigInt(v)), [2, T]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: 2 * T }, (_, i) => BigInt(i % T)), [2, T]),
    attention_bias: new ort.Tensor('float64', Float64Array.from(attentionBias(2, T, new Float32Array(2 * T).fill(1))), [2, 1, 1, T, T]),
  };
  for (const m of modules) {
    // PEFT A [R, in] → row 0's [in, R]; PEFT B [out, R] → [R, out] times alpha/r; row 1 all zeros (base).
    const A = values.get(m.loraA)!;
    const B = values.get(m.loraB)!;
    const a = new Float64Array(2 * m.in * 2);
    const b = new Float64Array(2 * 2 * m.out);
    for (let i = 0; i < m.in; i++) for (let r = 0; r < 2; r++) a[i * 2 + r] = A[r * m.in + i];
    for (let r = 0; r < 2; r++) for (let o = 0; o < m.out; o++) b[r * m.out + o] = B[o * 2 + r] * (lora.alpha / lora.r);
    feeds[`a.${m.layer}.${m.target}`] = new ort.Tensor('float64', a, [2, m.in, 2]);
    feeds[`b.${m.layer}.${m.target}`] = new ort.Tensor('float64', b, [2, 2, m.out]);
  }
  const got = (await s.run(feeds)).logits.data as Float64Array;
  assert.equal(got.length, expected.length);
  // 1e-7: the solo graphs' RoPE angles are rounded to float32 as HF computes them; the in-graph float64 ones are not.
  got.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-7, `logit ${i}: ${v} vs ${expected[i]}`));
  await s.close();
});
