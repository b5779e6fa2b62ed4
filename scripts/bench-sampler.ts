// `npm run bench -- sampler`: µs to pick one token from one row of logits at vocab 49,152 and 128,256 — greedy, temperature 0.7, and temperature 0.7 + top_p 0.9 + top_logprobs 5 — with each one's ratio to greedy.
// The logits are seeded and shaped like a language model's (a few tokens far above a normal spread), so top_p keeps a handful.
import { createRng } from '../src/engine/random.ts';
import { createSampler, type SamplingParams } from '../src/engine/serve/sampler.ts';

const ROWS = 16; // distinct rows cycled through, so no branch predictor learns one row
const MIN_MS = 300; // each case runs at least this long

const settings: [string, Partial<SamplingParams>][] = [
  ['greedy', { temperature: 0 }],
  ['temperature 0.7', { temperature: 0.7 }],
  ['t 0.7 + top_p 0.9 + top_logprobs 5', { temperature: 0.7, topP: 0.9, topLogprobs: 5 }],
];

for (const V of [49152, 128256]) {
  const rng = createRng(V);
  const rows = Array.from({ length: ROWS }, () => {
    const x = new Float32Array(V);
    for (let i = 0; i < V; i++) x[i] = 3 * rng.normal();
    for (let k = 0; k < 8; k++) x[Math.floor(rng.float() * V)] = 14 + 2 * rng.float();
    return x;
  });
  const counts = new Map<number, number>();
  let greedyUs = NaN;
  for (const [name, over] of settings) {
    const sampler = createSampler({ temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, seed: 1, ...over });
    for (let k = 0; k < 20; k++) sampler.next(rows[k % ROWS], counts); // warm-up: let the JIT optimise
    let n = 0;
    const start = performance.now();
    while (performance.now() - start < MIN_MS) sampler.next(rows[n++ % ROWS], counts);
    const us = ((performance.now() - start) * 1000) / n;
    if (name === 'greedy') greedyUs = us;
    console.log(`vocab ${V}  ${name.padEnd(36)} ${us.toFixed(1).padStart(9)} µs/token  ×${(us / greedyUs).toFixed(1)} greedy`);
  }
}
