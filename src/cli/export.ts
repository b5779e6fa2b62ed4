// `localtune export MODEL …` and `localtune models import …`: move models out of and into a running server through its
// /v1 API (so the key's project decides what may be exported, exactly as for the SDKs).
import { createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { openAsBlob } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { extract } from 'tar';
import { ConfigError } from '../config.ts';
import { EXPORT_DTYPES, EXPORT_FORMATS, exportFileName, isSingleFile, type ExportDtype, type ExportFormat } from '../engine/export/export-model.ts';
import type { components } from '../http/openapi-types.ts';
import { CONNECTION_USAGE, clientFromArgs } from './api-client.ts';
import { rejectExtra, takeOption } from './options.ts';

export const EXPORT_USAGE = `usage: localtune export MODEL --format peft|merged|gguf|gguf-lora [--dtype f32|f16|bf16|q8_0|q4_0] [--out DIR|FILE]
       MODEL: a base model, or one of the project's ft: models or checkpoints
       peft       adapter_config.json + adapter_model.safetensors (fine-tuned models)      → DIR
       merged     a Hugging Face model directory, the adapter folded into the weights      → DIR
       gguf       one GGUF file for llama.cpp, Ollama, LM Studio (default dtype f16)       → FILE
       gguf-lora  the adapter as a GGUF LoRA for llama.cpp --lora on a GGUF of the base  → FILE
       --out defaults to a name made from MODEL in the current directory; an existing non-empty DIR or FILE is refused
options:
${CONNECTION_USAGE}`;

export const IMPORT_USAGE = `usage: localtune models import ADAPTER_DIR --base-model MODEL [--suffix NAME]
       registers a PEFT LoRA adapter (ADAPTER_DIR/adapter_config.json + adapter_model.safetensors) as an ft: model
       of the project; prints the new model id
options:
${CONNECTION_USAGE}`;

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], option: string): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new ConfigError(`${option}: '${value}' is not one of ${allowed.join(', ')}`);
  return value as T;
}

/** Downloads the export into a temp path beside `out` and renames it into place, so `out` is never half-written. */
export async function exportCommand(args: string[]): Promise<void> {
  const client = clientFromArgs(args);
  const format = oneOf(takeOption(args, '--format'), EXPORT_FORMATS, '--format') as ExportFormat | undefined;
  const dtype = oneOf(takeOption(args, '--dtype'), EXPORT_DTYPES, '--dtype') as ExportDtype | undefined;
  const outArg = takeOption(args, '--out');
  const [model, ...extra] = args;
  rejectExtra(extra, 'localtune export');
  if (!model || !format) throw new ConfigError(`MODEL and --format are required\n${EXPORT_USAGE}`);
  const out = resolve(outArg ?? exportFileName(model, format, dtype ?? null));
  if (existsSync(out) && (statSync(out).isFile() || readdirSync(out).length > 0)) throw new ConfigError(`--out ${out} already exists; choose another path or remove it`);

  const query = new URLSearchParams({ format, ...(dtype ? { dtype } : {}) });
  const res = await client.download(`/models/${encodeURIComponent(model)}/export?${query}`);
  mkdirSync(dirname(out), { recursive: true });
  const temp = join(dirname(out), `.${Date.now()}.export.tmp`);
  const body = Readable.fromWeb(res.body as ReadableStream<Uint8Array>);
  try {
    if (isSingleFile(format)) {
      await pipeline(body, createWriteStream(temp));
    } else {
      mkdirSync(temp);
      await pipeline(body, extract({ cwd: temp }));
    }
    if (existsSync(out)) rmSync(out, { recursive: true });
    renameSync(temp, out);
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
  console.log(out);
}

export async function importCommand(args: string[]): Promise<void> {
  const client = clientFromArgs(args);
  const base = takeOption(args, '--base-model');
  const suffix = takeOption(args, '--suffix');
  const [dir, ...extra] = args;
  rejectExtra(extra, 'localtune models import');
  if (!dir || !base) throw new ConfigError(`ADAPTER_DIR and --base-model are required\n${IMPORT_USAGE}`);
  const form = new FormData();
  for (const [field, file] of [['adapter_config', 'adapter_config.json'], ['adapter_model', 'adapter_model.safetensors']] as const) {
    const path = join(dir, file);
    if (!existsSync(path)) throw new ConfigError(`${path} is missing (a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors)`);
    form.append(field, await openAsBlob(path), file);
  }
  form.append('base_model', base);
  if (suffix) form.append('suffix', suffix);
  const model = await client.postForm<components['schemas']['Model']>('/models/import', form);
  console.log(model.id);
}
