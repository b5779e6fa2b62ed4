// Seeded shuffling: the same (seed, epoch) always gives the same example order, on any machine.
import { createRng, streamSeed } from '../engine/random.ts';

/** The order in which epoch `epoch` visits examples 0..n-1 (Fisher–Yates). */
export function epochOrder(n: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const rng = createRng(streamSeed(seed, epoch));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor((rng.uint32() / 2 ** 32) * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}
