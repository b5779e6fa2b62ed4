import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
const dir = '/tmp/localtune-bench/cache-small';
const f = readdirSync(dir).filter((x) => x.startsWith('graph-grad')).sort((a, b) => statSync(join(dir, b)).mtimeMs - statSync(join(dir, a)).mtimeMs)[0];
const s = await ort.InferenceSession.create(join(dir, f), { executionMode: 'sequential', intraOpNumThreads: 2, interOpNumThreads: 1, enableProfiling: true, profileFilePrefix: '/tmp/xprof' });
const B = 4, T = 256, K = 1024;
const feeds: Record<string, ort.Tensor> = {};
feeds.input_ids = new ort.Tensor('int32', new Int32Array(B * T).map((_, i) => (i * 7) % 512), [B, T]);
feeds.attention_bias = new ort.Tensor('float32', new Float32Array(B * T * T), [B, 1, 1, T, T]);
feeds.loss_rows = new ort.Tensor('int64', BigInt64Array.from({ length: K }, (_, i) => BigInt(i)), [K]);
feeds.loss_labels = new ort.Tensor('int64', BigInt64Array.from({ length: K }, (_, i) => BigInt(i % 512)), [K]);
feeds.loss_weights = new ort.Tensor('float32', new Float32Array(K).fill(1), [K]);
for (const name of s.inputNames) if (name.includes('lora')) feeds[name] = new ort.Tensor('float32', new Float32Array(4096).fill(0.01), name.includes('lora_A') ? [8, 512] : [512, 8]);
for (let i = 0; i < 3; i++) await s.run(feeds);
s.endProfiling();
const file = readdirSync('/tmp').filter((x) => x.startsWith('xprof')).sort().pop()!;
const ev = JSON.parse(readFileSync(join('/tmp', file), 'utf8'));
const by: Record<string, [number, number]> = {};
let total = 0;
for (const e of ev) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) {
  const shapes = JSON.stringify(e.args.output_type_shape?.map((o: any) => Object.values(o)[0]));
  const k = e.args.op_name + ' ' + shapes;
  by[k] ??= [0, 0]; by[k][0] += e.dur; by[k][1]++; total += e.dur;
}
for (const [k, v] of Object.entries(by).sort((a, b) => b[1][0] - a[1][0]).slice(0, 30)) console.log(k.padEnd(60), (v[0] / 3 / 1000).toFixed(1), 'ms', (100 * v[0] / total).toFixed(1) + '%', 'n=' + v[1] / 3);
console.log('total', (total / 3 / 1000).toFixed(1), 'ms/run');
