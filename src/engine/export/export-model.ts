// One entry point for every export format: a base model directory (+ an adapter) written as PEFT, a merged HF model,
// a GGUF model or a GGUF LoRA adapter. Requests that cannot be honoured are an ExportRefused naming the problem.
import { mkdirSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, saveAdapter } from '../lora/peft.ts';
import type { TensorDtype } from '../models/safetensors.ts';
import { openExportSource } from './export-source.ts';
import { writeGgufAdapter, writeGgufModel, type GgufDtype } from './gguf-export.ts';
import { ExportRefused } from './export-refused.ts';
import { writeMergedDir } from './merged-dir.ts';

export { ExportRefused };

export const EXPORT_FORMATS = ['peft', 'merged', 'gguf', 'gguf-lora'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];
export const EXPORT_DTYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
export type ExportDtype = (typeof EXPORT_DTYPES)[number];

/** GGUF formats write one file; the others a directory. */
export const isSingleFile = (format: ExportFormat) => format === 'gguf' || format === 'gguf-lora';

/** The name an export gets (a file for GGUF formats, a folder otherwise): the model id made file-safe, plus the GGUF type. */
export function exportFileName(modelId: string, format: ExportFormat, dtype: ExportDtype | null): string {
  const safe = modelId.replace(/[^A-Za-z0-9._-]+/g, '-');
  const type = dtype ?? defaultExportDtype(format);
  return format === 'gguf' ? `${safe}.${type}.gguf` : format === 'gguf-lora' ? `${safe}.lora.${type}.gguf` : safe;
}

/** The dtype an export uses when none is asked: GGUF f16 (as llama.cpp's converter), adapters f32, merged models the base's own. */
export function defaultExportDtype(format: ExportFormat): ExportDtype | null {
  if (format === 'gguf') return 'f16';
  if (format === 'merged') return null;
  return 'f32';
}

/** Checks a format/dtype/model combination before any work. */
export function checkExportRequest(format: ExportFormat, dtype: ExportDtype | null, fineTuned: boolean): void {
  if ((format === 'peft' || format === 'gguf-lora') && !fineTuned) throw new ExportRefused(`format ${format} exports an adapter; a base model has none (use merged or gguf)`, 'format');
  if ((dtype === 'q8_0' || dtype === 'q4_0') && !isSingleFile(format)) throw new ExportRefused(`dtype ${dtype} is a GGUF type; format ${format} takes f32, f16 or bf16`, 'dtype');
  if (dtype === 'q4_0' && format === 'gguf-lora') throw new ExportRefused('dtype q4_0 is for whole models; a GGUF LoRA takes f32, f16, bf16 or q8_0', 'dtype');
}

/** The safetensors dtype of a peft/merged export (checkExportRequest has refused the GGUF types for them). */
function safetensorsDtype(dtype: ExportDtype): TensorDtype {
  if (dtype === 'q8_0' || dtype === 'q4_0') throw new ExportRefused(`dtype ${dtype} is a GGUF type`, 'dtype');
  return ({ f32: 'F32', f16: 'F16', bf16: 'BF16' } as const)[dtype];
}

export interface ExportRequest {
  modelDir: string;
  adapterDir: string | null;
  /** The model id the export is named after (general.name, file names). */
  modelId: string;
  format: ExportFormat;
  dtype: ExportDtype | null;
  /** A directory for peft/merged, a file for the GGUF formats. */
  out: string;
  /** merged only: largest shard (tests use small ones). */
  maxShardBytes?: number;
}

/** Writes the export; returns the paths written, relative to `out` (directory formats) or [basename] (single files). */
export function exportModel(r: ExportRequest): string[] {
  checkExportRequest(r.format, r.dtype, r.adapterDir !== null);
  const dtype = r.dtype ?? defaultExportDtype(r.format);
  let src;
  try {
    src = openExportSource(r.modelDir, r.adapterDir);
  } catch (err) {
    throw new ExportRefused((err as Error).message, 'model');
  }
  switch (r.format) {
    case 'peft': {
      const adapter = src.adapter!;
      mkdirSync(r.out, { recursive: true });
      saveAdapter(r.out, adapter.config, adapter.tensors, src.baseName, safetensorsDtype(dtype!));
      return [ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE];
    }
    case 'merged':
      return writeMergedDir(src, r.out, { dtype: dtype ? safetensorsDtype(dtype) : undefined, maxShardBytes: r.maxShardBytes });
    case 'gguf':
    case 'gguf-lora': {
      mkdirSync(dirname(r.out), { recursive: true });
      const write = r.format === 'gguf' ? writeGgufModel : writeGgufAdapter;
      write(src, r.out, dtype as GgufDtype, r.modelId);
      return [basename(r.out)];
    }
  }
}
