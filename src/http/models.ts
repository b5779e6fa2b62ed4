// /v1/models: base models (context length, device) and the project's fine-tuned models and checkpoints; retrieve; delete a fine-tuned model.
import { Router } from 'express';
import { rmSync, statSync } from 'node:fs';
import { listBaseModels, type BaseModelInfo } from '../engine/models/registry.ts';
import { fineTunedModelStore, type FineTunedModelRow } from '../store/fine-tuned-models.ts';
import type { AppContext } from './context.ts';
import { badRequest } from './errors.ts';
import { adapterDirOf, isBaseModelId, modelNotFound } from './generation.ts';
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
  const store = fineTunedModelStore(ctx.db);

  router.get('/models', validate('listModels'), (req, res) => {
    const base = listBaseModels(ctx.config.modelsDir).models.map((m) => baseModelObject(ctx, m));
    res.json({ object: 'list', data: [...base, ...store.list(req.project).map(fineTunedModelObject)] });
  });

  router.get('/models/:model', validate('retrieveModel'), (req, res) => {
    const id = req.params.model as string;
    if (isBaseModelId(ctx, id)) {
      const m = listBaseModels(ctx.config.modelsDir).models.find((b) => b.id === id);
      if (m) return void res.json(baseModelObject(ctx, m));
    }
    const row = store.get(req.project, id);
    if (!row) throw modelNotFound(id);
    res.json(fineTunedModelObject(row));
  });

  router.delete('/models/:model', validate('deleteModel'), (req, res) => {
    const id = req.params.model as string;
    if (isBaseModelId(ctx, id)) throw badRequest(`Base model \`${id}\` cannot be deleted through the API; only fine-tuned models can.`, 'model');
    const row = store.get(req.project, id);
    if (!row) throw modelNotFound(id);
    store.delete(req.project, id);
    ctx.models.evictAdapter(id);
    // Another of the project's models (e.g. the final model and its last checkpoint) may share the files.
    if (!store.list(req.project).some((other) => other.adapter_dir === row.adapter_dir)) rmSync(adapterDirOf(ctx, row), { recursive: true, force: true });
    res.json({ id, object: 'model', deleted: true });
  });

  return router;
}
