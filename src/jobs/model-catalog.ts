// Model ids → files: the base model folder or fine-tuned adapter folder an id (or a configured alias) names, and removing adapter folders no model uses.
import { existsSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { listBaseModels, MODEL_ID_PATTERN, type BaseModelInfo } from '../engine/models/registry.ts';
import { dataDirFolder } from '../store/data-dir.ts';
import type { FineTunedModelRow, Store } from '../store/store.ts';

/** What a model id names: a base model, or a project's fine-tuned model (or checkpoint) served on top of one. */
export type CatalogModel =
  | { kind: 'base'; id: string; baseModel: string }
  | { kind: 'fine-tuned'; id: string; baseModel: string; row: FineTunedModelRow };

export interface ModelCatalogOptions {
  store: Store;
  dataDir: string;
  modelsDir: string;
  /** Alias → the model id it stands for (`--model-aliases`). */
  aliases: ReadonlyMap<string, string>;
}

export interface ModelCatalog {
  readonly aliases: ReadonlyMap<string, string>;
  /** Whether `id` is a usable-looking folder under the models directory (not following aliases). */
  isBaseModel(id: string): boolean;
  baseModelDir(id: string): string;
  /** Usable base models under the models directory. */
  baseModels(): BaseModelInfo[];
  /** What `id` names for `project`, aliases followed: a base model, or one of the project's fine-tuned models whose base is present; else null. */
  find(project: string, id: string): Promise<CatalogModel | null>;
  /** The local adapter folder of a fine-tuned model (fetched first when another node made it). */
  adapterDirOf(row: FineTunedModelRow): Promise<string>;
  /** Stored form (relative to the data dir) of a folder that must lie under `within`. */
  storedAdapterDir(dir: string, within: string): string;
  /** Deletes the project's fine-tuned model and its adapter folder unless another model is served from it; false when there was none. */
  deleteFineTuned(project: string, id: string): Promise<boolean>;
  /** Removes each folder (absolute, or stored relative to the data dir) that no model is served from; never one outside the data dir. */
  removeUnusedAdapterDirs(dirs: readonly string[]): Promise<void>;
}

export function createModelCatalog(o: ModelCatalogOptions): ModelCatalog {
  const store = o.store.models;
  const root = resolve(o.dataDir);

  const isBaseModel = (id: string) => MODEL_ID_PATTERN.test(id) && existsSync(join(o.modelsDir, id, 'config.json'));

  async function removeUnusedAdapterDirs(dirs: readonly string[]): Promise<void> {
    const used = await store.adapterDirsInUse();
    for (const dir of dirs) {
      const key = relative(root, dataDirFolder(root, dir));
      if (!used.has(key)) await o.store.dirs.remove(key);
    }
  }

  return {
    aliases: o.aliases,
    isBaseModel,
    baseModelDir: (id) => join(o.modelsDir, id),
    baseModels: () => listBaseModels(o.modelsDir).models,
    async find(project, id) {
      const target = o.aliases.get(id) ?? id;
      if (isBaseModel(target)) return { kind: 'base', id: target, baseModel: target };
      const row = await store.get(project, target);
      if (!row || !isBaseModel(row.base_model)) return null;
      return { kind: 'fine-tuned', id: row.id, baseModel: row.base_model, row };
    },
    async adapterDirOf(row) {
      const dir = await o.store.dirs.fetch(row.adapter_dir);
      if (dir === undefined) throw new Error(`fine-tuned model ${row.id}: its adapter folder ${row.adapter_dir} is missing`);
      return dir;
    },
    storedAdapterDir(dir, within) {
      const abs = resolve(within, dir);
      if (!abs.startsWith(resolve(within) + sep)) throw new Error(`adapter folder ${dir} is outside ${within}`);
      return relative(root, dataDirFolder(root, abs));
    },
    async deleteFineTuned(project, id) {
      const row = await store.get(project, id);
      if (!row || !(await store.delete(project, id))) return false;
      await removeUnusedAdapterDirs([row.adapter_dir]);
      return true;
    },
    removeUnusedAdapterDirs,
  };
}
