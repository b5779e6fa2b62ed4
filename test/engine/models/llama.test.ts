// The forward with symbolic dims and a KV cache (the generation door): prefill + one decode step equal the full-sequence logits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { attentionBias, decoderStack, dynamicRopeTables, finalNorm, lmHead } from '../../../src/engine/models/llama.ts';
import { Graph } from '../../../src/engine/onnx/graph.ts';
import { createSession } from '../../../src/engine/onnx/session.ts';
import { buildLogitsGraph, embeddedWeights, IO } from '../../../src/engine/train/graphs.ts';
import { randomBatch, randomWeights, tinyConfig } from '../fixtures.ts';

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
  const full = await createSession(buildLogitsGraph(config, weights, null, 1, T, 'float64').serialize(), { device: 'cpu', threads: 1, optimization: 'basic' });
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
