// /v1/models: base models (context length, device), the project's fine-tuned models and checkpoints, and aliases; retrieve; delete a fine-tuned model.
import { Router } from 'express';
import { statSync } from 'node:fs';
import type { BaseModelInfo } from '../engine/models/registry.ts';
import type { CatalogModel } from '../jobs/model-catalog.ts';
import type { FineTunedModelRow } from '../store/store.ts';
import type { AppContext } from './context.ts';
import { badRequest } from './errors.ts';
import { modelNotFound } from './generation.ts';
import { validate } from './validation.ts';
import type { components } from './openapi-types.ts';

type ModelObject = components['schemas']['Model'];

function baseModelObject(ctx: AppContext, m: BaseModelInfo): ModelObject {
  return {
    id: m.id,
    object: 'model',
    created: Math.floor(statSync(m.dir).mtimeMs / 1000),
    owned_by: 'system',
    context_length: m.contextLength,
    device: ctx.models.loadedDevices().get(m.id) ?? ctx.models.expectedDevice(),
  };
}

function fineTunedModelObject(row: FineTunedModelRow): ModelObject {
  return { id: row.id, object: 'model', created: row.created_at, owned_by: row.project, parent: row.base_model };
}

export function modelsRouter(ctx: AppContext): Router {
  const router = Router();

  function modelObject(model: CatalogModel): ModelObject | null {
    if (model.kind === 'fine-tuned') return fineTunedModelObject(model.row);
    const info = ctx.catalog.baseModels().find((b) => b.id === model.id);
    return info ? baseModelObject(ctx, info) : null;
  }

  /** The object of what `id` names for `project`; an alias answers as its model under the alias's id, with `alias_for`. */
  async function objectOf(project: string, id: string): Promise<ModelObject | null> {
    const model = await ctx.catalog.find(project, id);
    const object = model && modelObject(model);
    if (!object) return null;
    return ctx.catalog.aliases.has(id) ? { ...object, id, alias_for: object.id } : object;
  }

  router.get('/models', validate('listModels'), async (req, res) => {
    const base = ctx.catalog.baseModels().map((m) => baseModelObject(ctx, m));
    const tuned = (await ctx.store.models.list(req.project)).map(fineTunedModelObject);
    const aliases = (await Promise.all([...ctx.catalog.aliases.keys()].map((alias) => objectOf(req.project, alias)))).filter((m) => m !== null);
    res.json({ object: 'list', data: [...base, ...tuned, ...aliases] });
  });

  router.get('/models/:model', validate('retrieveModel'), async (req, res) => {
    const id = req.params.model as string;
    const object = await objectOf(req.project, id);
    if (!object) throw modelNotFound(id);
    res.json(object);
  });

  router.delete('/models/:model', validate('deleteModel'), async (req, res) => {
    const id = req.params.model as string;
    const target = ctx.catalog.aliases.get(id);
    if (target !== undefined) throw badRequest(`\`${id}\` is an alias of \`${target}\` (set by --model-aliases) and cannot be deleted; delete \`${target}\` itself if it is a fine-tuned model.`, 'model');
    if (ctx.catalog.isBaseModel(id)) throw badRequest(`Base model \`${id}\` cannot be deleted through the API; only fine-tuned models can.`, 'model');
    if (!(await ctx.catalog.deleteFineTuned(req.project, id))) throw modelNotFound(id);
    ctx.models.evictAdapter(id);
    res.json({ id, object: 'model', deleted: true });
  });

  return router;
}
