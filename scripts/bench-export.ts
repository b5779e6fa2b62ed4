// Export benchmark: every export format of a SmolLM2-135M-shaped model (random bf16 weights, r16 adapter on all
// projections); prints seconds and output size per format. `--cases base` skips the adapter formats.
import { mkdtempSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { exportModel, type ExportDtype, type ExportFormat } from '../src/engine/export/export-model.ts';
import { initAdapter } from '../src/engine/lora/init.ts';
import { resolveLoraConfig } from '../src/engine/lora/config.ts';
import { saveAdapter } from '../src/engine/lora/peft.ts';
import { parseModelConfig } from '../src/engine/models/config.ts';
import { defaultTokenizerConfigJson, defaultTokenizerJson } from '../src/engine/models/default-model.ts';
import { baseParameters } from '../src/engine/models/parameters.ts';
import { writeSafetensors, type TensorToWrite } from '../src/engine/models/safetensors.ts';
import { createRng, fillNormal } from '../src/engine/random.ts';

const { values: flags } = parseArgs({ options: { cases: { type: 'string', default: 'all' } }, strict: false });

/** SmolLM2-135M's config.json shape (weights random; its real tokenizer is not shipped here, the byte-level one stands in). */
const SMOLLM2_135M = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  vocab_size: 49152,
  rms_norm_eps: 1e-5,
  rope_theta: 100000,
  max_position_embeddings: 8192,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
};

const dir = mkdtempSync(join(tmpdir(), 'localtune-bench-export-'));
try {
  const modelDir = join(dir, 'SmolLM2-135M-shape');
  mkdirSync(modelDir);
  const config = parseModelConfig(SMOLLM2_135M);
  writeFileSync(join(modelDir, 'config.json'), JSON.stringify(SMOLLM2_135M));
  writeFileSync(join(modelDir, 'tokenizer.json'), JSON.stringify(defaultTokenizerJson()));
  writeFileSync(join(modelDir, 'tokenizer_config.json'), JSON.stringify(defaultTokenizerConfigJson()));
  const rng = createRng(1);
  const weights = new Map<string, TensorToWrite>();
  for (const p of baseParameters(config)) {
    const data = p.dims.length === 1 ? new Float32Array(p.dims[0]).fill(1) : fillNormal(rng, new Float32Array(p.dims[0] * p.dims[1]), 0, 0.02);
    weights.set(p.name, { dims: p.dims, data, dtype: 'BF16' });
  }
  writeSafetensors(join(modelDir, 'model.safetensors'), weights);
  weights.clear();
  const adapterDir = join(dir, 'adapter');
  const lora = resolveLoraConfig({ r: 16, alpha: 32 });
  const adapter = initAdapter(config, lora, 2);
  for (const [name, t] of adapter) if (name.includes('lora_B')) fillNormal(rng, t.data, 0, 0.01);
  saveAdapter(adapterDir, lora, adapter, 'SmolLM2-135M-shape');

  const cases: [ExportFormat, ExportDtype | null][] = [
    ['peft', null],
    ['merged', null],
    ['merged', 'f32'],
    ['gguf', 'f32'],
    ['gguf', 'f16'],
    ['gguf', 'q8_0'],
    ['gguf', 'q4_0'],
    ['gguf-lora', 'f16'],
  ];
  const size = (path: string): number => (statSync(path).isDirectory() ? readdirSync(path).reduce((n, f) => n + size(join(path, f)), 0) : statSync(path).size);
  console.log(`SmolLM2-135M shape (${(baseParameters(config).reduce((n, p) => n + p.dims.reduce((a, b) => a * b, 1), 0) / 1e6).toFixed(1)} M parameters, bf16 base), r16 adapter on all projections`);
  // CPU seconds beside wall seconds: on a shared machine the wall time mostly measures the other processes.
  console.log('format      dtype     wall s    cpu s   size MB');
  for (const [format, dtype] of cases) {
    if (flags.cases === 'base' && (format === 'peft' || format === 'gguf-lora')) continue;
    const out = join(dir, `out-${format}-${dtype}`);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    exportModel({ modelDir, adapterDir: flags.cases === 'base' ? null : adapterDir, modelId: 'bench', format, dtype, out });
    const cpu = process.cpuUsage(cpu0);
    const seconds = (performance.now() - t0) / 1000;
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    console.log(`${format.padEnd(11)} ${(dtype ?? 'default').padEnd(7)} ${seconds.toFixed(2).padStart(8)} ${cpuSeconds.toFixed(2).padStart(8)}   ${(size(out) / 1e6).toFixed(1).padStart(7)}`);
    rmSync(out, { recursive: true, force: true });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
