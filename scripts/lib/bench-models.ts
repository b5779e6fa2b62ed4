// The benches' model shapes, and seeded random models of them written straight into their weight cache at a base precision.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig } from '../../src/engine/models/config.ts';
import { baseParameters } from '../../src/engine/models/parameters.ts';
import { writeSafetensors, type TensorToWrite } from '../../src/engine/models/safetensors.ts';
import { QUANT_LAYOUT, type Precision, type QuantFormat, type QuantizedTensor } from '../../src/engine/models/quantize.ts';
import { isQuantizedParameter, modelFingerprint, quantizedBlockSize, readWeightCache, writeWeightCache } from '../../src/engine/models/weight-cache.ts';
import { createRng, fillNormal, type Rng } from '../../src/engine/random.ts';

const base = { architectures: ['LlamaForCausalLM'], rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 2048 };

/** config.json of each bench shape: a small one, SmolLM2-135M's, and Llama-3.2-1B's and Llama-3.1-8B's (random weights). */
export const SHAPES: Record<string, Record<string, unknown>> = {
  small: { ...base, hidden_size: 512, intermediate_size: 1408, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 8, vocab_size: 512, tie_word_embeddings: false },
  smollm: { ...base, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, vocab_size: 49152, tie_word_embeddings: true },
  llama1b: { ...base, rope_theta: 500000, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256, tie_word_embeddings: true },
  llama8b: { ...base, rope_theta: 500000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256, tie_word_embeddings: false },
};

/** Shapes whose fp32 weights (32 GB for 8B) would not fit this machine: benched quantized only, from seeded codes. */
export const QUANTIZED_ONLY = new Set(['llama8b']);

/**
 * Seeded codes and block scales of a [N, K] matrix, as quantize() lays them out: uniform random code bytes and scales
 * of a N(0, 0.02) block's size (its absmax ≈ 0.06). Seconds for an 8B shape, where drawing and quantizing 8·10⁹
 * normal values took too long on shared cores; the numbers are as random as the drawn ones and cost the kernels the same.
 */
function randomQuantized(rng: Rng, dims: [number, number], format: QuantFormat, blockSize: number): QuantizedTensor {
  const { bits } = QUANT_LAYOUT[format];
  const [N, K] = dims;
  const codes = new Uint8Array((N * K * bits) / 8);
  for (let i = 0; i < codes.length; i += 4) {
    const r = rng.uint32();
    codes[i] = r & 255;
    codes[i + 1] = (r >>> 8) & 255;
    codes[i + 2] = (r >>> 16) & 255;
    codes[i + 3] = r >>> 24;
  }
  const absmax = 0.06;
  const scales = new Float32Array((N * K) / blockSize).fill(format === 'nf4' ? absmax : absmax / -(1 << (bits - 1)));
  return { format, dims, blockSize, codes, scales };
}

/**
 * A seeded random model of `shape` under `root` (config.json only) and its weight cache at `precision`, written
 * straight from the generator, one tensor at a time (an 8B shape never exists in fp32, on disk or in memory). Every
 * precision of a shape quantizes the same values, except QUANTIZED_ONLY shapes, whose matrices are drawn as codes.
 * Returns the folders to give the trainer or the runner.
 */
export function benchModel(root: string, shape: string, precision: Precision): { modelDir: string; cacheDir: string } {
  const json = SHAPES[shape];
  if (!json) throw new Error(`unknown shape ${shape} (${Object.keys(SHAPES).join(', ')})`);
  const modelDir = join(root, `model-${shape}`);
  const cacheDir = join(root, `cache-${shape}`);
  if (!existsSync(join(modelDir, 'config.json'))) {
    mkdirSync(modelDir, { recursive: true });
    writeFileSync(join(modelDir, 'config.json'), JSON.stringify(json));
  }
  if (!readWeightCache(modelDir, cacheDir, { dtype: 'float32', precision })) {
    const config = parseModelConfig(json);
    const rng = createRng(1);
    writeWeightCache(cacheDir, config, { dtype: 'float32', precision, fingerprint: modelFingerprint(modelDir, precision) }, (spec) => {
      if (QUANTIZED_ONLY.has(shape) && isQuantizedParameter(spec, precision)) return randomQuantized(rng, spec.dims as [number, number], precision, quantizedBlockSize(spec, precision));
      const data = new Float32Array(spec.dims.reduce((x, y) => x * y, 1));
      return spec.dims.length === 1 ? data.fill(1) : fillNormal(rng, data, 0, 0.02);
    });
  }
  return { modelDir, cacheDir };
}

/** A seeded random model of `configJson` in Hugging Face layout (config.json + fp32 model.safetensors): norms 1, matrices N(0, 0.02). */
export function writeRandomModel(modelDir: string, configJson: Record<string, unknown>, rng: Rng): void {
  mkdirSync(modelDir, { recursive: true });
  const weights = new Map<string, TensorToWrite>();
  for (const p of baseParameters(parseModelConfig(configJson))) {
    const data = new Float32Array(p.dims.reduce((a, b) => a * b, 1));
    weights.set(p.name, { dims: p.dims, data: p.dims.length === 1 ? data.fill(1) : fillNormal(rng, data, 0, 0.02) });
  }
  writeSafetensors(join(modelDir, 'model.safetensors'), weights);
  writeFileSync(join(modelDir, 'config.json'), JSON.stringify(configJson));
}
