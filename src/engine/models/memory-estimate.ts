// How many bytes a base model's weights take resident at each precision, from its config alone (no weights read).
import type { ModelConfig } from './config.ts';
import { baseParameters, parameterCount } from './parameters.ts';
import { isQuantizedParameter, quantizedBlockSize } from './weight-cache.ts';
import { QUANT_LAYOUT, type Precision } from './quantize.ts';

/**
 * Bytes of the base weights held at `precision`, split into the tensors kept in fp32 (4 bytes a value) and the
 * quantized matrices (bits/8 a value plus one fp32 scale per block). onnxruntime's additions are not in it.
 */
export function baseWeightBytes(config: ModelConfig, precision: Precision): { fp32: number; quantized: number; total: number } {
  let fp32 = 0;
  let quantized = 0;
  for (const spec of baseParameters(config)) {
    const n = parameterCount([spec]);
    if (isQuantizedParameter(spec, precision)) quantized += (n * QUANT_LAYOUT[precision].bits) / 8 + (4 * n) / quantizedBlockSize(spec, precision);
    else fp32 += 4 * n;
  }
  return { fp32, quantized, total: fp32 + quantized };
}

/**
 * A training job's peak memory, roughly: fp32 weights ×3.2 (measured on the fp32 1B Llama shape at 1 × 1024: ~16 GB
 * peak for ~5 GB of weights with prepacking: packed copies, gradients' transposes and activations), quantized
 * projections ×2 (the codes and the kernel's prepacked copy).
 */
export function trainingPeakEstimate(config: ModelConfig, precision: Precision): number {
  const bytes = baseWeightBytes(config, precision);
  return 3.2 * bytes.fp32 + 2 * bytes.quantized;
}
