// `npm run bench -- quant-kernels`: why nf4 decodes slower than fp32. One [2048 → 8192] projection at one row (a decode step's
// shape), side by side in one run at 1 and 2 threads: the fp32 Gemm, nf4 through MatMulBnb4, the nf4 dequantization alone
// (the in-graph one training's input gradient uses), and int4 through MatMulNBits.
// onnxruntime 1.29's CPU MatMulBnb4 dequantizes its whole weight into fp32 scratch on every call, then runs an fp32 GEMM
// (contrib_ops/cpu/quantization/matmul_bnb4.cc: no prepacking, no one-row path), so its time is at least a dequantization
// plus the fp32 product; MatMulNBits prepacks its blocks and multiplies them without an fp32 copy.
import * as ort from 'onnxruntime-node';
import { Graph, type Tensor } from '../src/engine/onnx/graph.ts';
import { dequantized, quantizedLinear, type QuantizedWeight } from '../src/engine/onnx/quantized.ts';
import { byteLevels, quantize, QUANT_LAYOUT, type QuantFormat } from '../src/engine/models/quantize.ts';
import * as op from '../src/engine/onnx/ops.ts';
import { createSession } from '../src/engine/onnx/session.ts';
import { createRng, fillNormal } from '../src/engine/random.ts';

const [N, K, M] = [8192, 2048, 1];
const RUNS = 15;
const w = fillNormal(createRng(1), new Float32Array(N * K), 0, 0.02);
const x = new ort.Tensor('float32', fillNormal(createRng(2), new Float32Array(M * K), 0, 1), [M, K]);

/** A graph-local QuantizedWeight over embedded initializers (as weight-source makes them from the cache). */
function embedded(g: Graph, format: QuantFormat): QuantizedWeight {
  const q = quantize(w, [N, K], format);
  const { bits, blockSize } = QUANT_LAYOUT[format];
  const Q = K / blockSize;
  const scales = g.initializer(`${format}.scales`, 'float32', [N, Q, 1], q.scales);
  const codes = g.initializer(`${format}.codes`, 'uint8', format === 'nf4' ? [(N * K) / 2] : [N, Q, (blockSize * bits) / 8], q.codes);
  return {
    format, rows: N, cols: K, blockSize,
    codes: () => codes,
    codeRows: () => { throw new Error('not used'); },
    scales: () => scales,
    kernelScales: () => (format === 'nf4' ? scales : g.initializer(`${format}.kernel_scales`, 'float32', [N, Q], q.scales)),
    levels: () => g.constant(byteLevels(format), 'float32', [256, format === 'int8' ? 1 : 2]),
  };
}

const cases: Record<string, (g: Graph, x: Tensor) => Tensor> = {
  'fp32 Gemm': (g, x) => op.gemm(x, g.initializer('w', 'float32', [N, K], w), null, { transB: true }),
  'nf4 MatMulBnb4': (g, x) => quantizedLinear(x, embedded(g, 'nf4'), null),
  'nf4 dequantization alone': (g, x) => op.reduceSum(dequantized(embedded(g, 'nf4'), x), [0, 1], false),
  'int4 MatMulNBits': (g, x) => quantizedLinear(x, embedded(g, 'int4'), null),
};

console.log(`one [${K} → ${N}] projection, ${M} row, median of ${RUNS} runs (min), ms:`);
for (const threads of [1, 2]) {
  const row: string[] = [];
  for (const [name, build] of Object.entries(cases)) {
    const g = new Graph(name);
    g.output(build(g, g.input('x', 'float32', [M, K])), 'y');
    const s = await createSession(g.serialize(), { device: 'cpu', threads });
    await s.run({ x });
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      await s.run({ x });
      times.push(performance.now() - t0);
    }
    await s.close();
    times.sort((a, b) => a - b);
    row.push(`${name} ${times[RUNS >> 1].toFixed(1)} (${times[0].toFixed(1)})`);
  }
  console.log(`  ${threads} thread${threads > 1 ? 's' : ''}: ${row.join('; ')}`);
}
