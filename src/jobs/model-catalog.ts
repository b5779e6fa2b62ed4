// Model ids → files: the base model folder or fine-tuned adapter folder an id (or a configured alias) names, and removing adapter folders no model uses.
import { existsSync, rmSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { listBaseModels, MODEL_ID_PATTERN, type BaseModelInfo } from '../engine/models/registry.ts';
import type { Db } from '../store/db.ts';
import { fineTunedModelStore, type FineTunedModelRow } from '../store/fine-tuned-models.ts';

/** What a model id names: a base model, or a project's fine-tuned model (or checkpoint) served on top of one. */
export type CatalogModel =
  | { kind: 'base'; id: string; baseModel: string }
  | { kind: 'fine-tuned'; id: string; baseModel: string; row: FineTunedModelRow; adapterDir: string };

export interface ModelCatalogOptions {
  db: Db;
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
  find(project: string, id: string): CatalogModel | null;
  /** The absolute adapter folder of a fine-tuned model (stored relative to the data dir; never outside it). */
  adapterDirOf(row: FineTunedModelRow): string;
  /** Stored form (relative to the data dir) of a folder that must lie under `within`. */
  storedAdapterDir(dir: string, within: string): string;
  /** Deletes the project's fine-tuned model and its adapter folder unless another model is served from it; false when there was none. */
  deleteFineTuned(project: string, id: string): boolean;
  /** Removes each folder (absolute, or stored relative to the data dir) that no model is served from; never one outside the data dir. */
  removeUnusedAdapterDirs(dirs: readonly string[]): void;
}

export function createModelCatalog(o: ModelCatalogOptions): ModelCatalog {
  const store = fineTunedModelStore(o.db);
  const root = resolve(o.dataDir);

  /** Absolute form of a stored folder, refusing one that escapes the data dir (a bad row must not delete or read elsewhere). */
  function inDataDir(dir: string, what: string): string {
    const abs = resolve(root, dir);
    if (!abs.startsWith(root + sep)) throw new Error(`${what}: folder ${dir} is outside the data directory`);
    return abs;
  }

  const isBaseModel = (id: string) => MODEL_ID_PATTERN.test(id) && existsSync(join(o.modelsDir, id, 'config.json'));
  const adapterDirOf = (row: FineTunedModelRow) => inDataDir(row.adapter_dir, `fine-tuned model ${row.id}`);

  function removeUnusedAdapterDirs(dirs: readonly string[]): void {
    const used = store.adapterDirsInUse();
    for (const dir of dirs) {
      const abs = inDataDir(dir, 'adapter folder');
      if (!used.has(relative(root, abs))) rmSync(abs, { recursive: true, force: true });
    }
  }

  return {
    aliases: o.aliases,
    isBaseModel,
    baseModelDir: (id) => join(o.modelsDir, id),
    baseModels: () => listBaseModels(o.modelsDir).models,
    find(project, id) {
      const target = o.aliases.get(id) ?? id;
      if (isBaseModel(target)) return { kind: 'base', id: target, baseModel: target };
      const row = store.get(project, target);
      if (!row || !isBaseModel(row.base_model)) return null;
      return { kind: 'fine-tuned', id: row.id, baseModel: row.base_model, row, adapterDir: adapterDirOf(row) };
    },
    adapterDirOf,
    storedAdapterDir(dir, within) {
      const abs = resolve(within, dir);
      if (!abs.startsWith(resolve(within) + sep)) throw new Error(`adapter folder ${dir} is outside ${within}`);
      return relative(root, inDataDir(abs, 'adapter folder'));
    },
    deleteFineTuned(project, id) {
      const row = store.get(project, id);
      if (!row || !store.delete(project, id)) return false;
      removeUnusedAdapterDirs([row.adapter_dir]);
      return true;
    },
    removeUnusedAdapterDirs,
  };
}
