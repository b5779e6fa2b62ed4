// What every export reads: a base model directory (weights from the user's own safetensors, not the compute cache) and
// optionally a PEFT adapter, giving each base parameter with the adapter folded in, one tensor at a time.
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { loadAdapter, type LoadedAdapter } from '../lora/peft.ts';
import { foldAdapterInto, loraPairsByWeight } from '../lora/merge.ts';
import { readModelDir, type ModelDir } from '../models/model-dir.ts';
import { readTensor, type Tensor, type TensorDtype } from '../models/safetensors.ts';

export interface ExportSource {
  model: ModelDir;
  /** The base as its user named it: config.json's `_name_or_path` when it names a Hub repo, else the folder name. */
  baseName: string;
  adapter: LoadedAdapter | null;
  /** The dtype the base's weights are stored in (config.json's torch_dtype, else the embedding's). */
  baseDtype: TensorDtype;
  /** Base parameter `name` (parameter-table name) as float32, with the adapter folded in when it adapts it. */
  tensor(name: string): Tensor;
}

const TORCH_DTYPES: Record<string, TensorDtype> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

/** A Hub repo id (`owner/name`): what `_name_or_path` holds when the model came from from_pretrained("owner/name"). */
const HUB_REPO = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

function baseNameOf(model: ModelDir): string {
  const json = JSON.parse(readFileSync(join(model.dir, 'config.json'), 'utf8')) as { _name_or_path?: unknown };
  const recorded = json._name_or_path;
  return typeof recorded === 'string' && HUB_REPO.test(recorded) ? recorded : basename(model.dir);
}

/** Opens a model directory and, when given, an adapter directory for it (the adapter checked against the base's shapes). */
export function openExportSource(modelDir: string, adapterDir: string | null): ExportSource {
  const model = readModelDir(modelDir);
  const adapter = adapterDir ? loadAdapter(adapterDir, model.config) : null;
  const pairs = adapter ? loraPairsByWeight(model.config, adapter.config, adapter.tensors) : new Map();
  const embedding = [...model.tensors.values()][0];
  return {
    model,
    baseName: baseNameOf(model),
    adapter,
    baseDtype: (model.config.torchDtype && TORCH_DTYPES[model.config.torchDtype]) || (embedding.dtype as TensorDtype),
    tensor(name) {
      const entry = model.tensors.get(name);
      if (!entry) throw new Error(`${modelDir}: no tensor ${name}`);
      const t = readTensor(entry);
      if (adapter) foldAdapterInto(name, t, pairs, adapter.config);
      return t;
    },
  };
}
