// localtune extensions under /v1/models: export a model (PEFT, merged HF directory, GGUF, GGUF LoRA) as a download,
// and import a PEFT adapter trained elsewhere as a fine-tuned model of the project.
import { Router } from 'express';
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { create as createTar } from 'tar';
import { exportInChildProcess } from '../engine/export/export-process.ts';
import { ExportRefused, checkExportRequest, exportFileName, isSingleFile } from '../engine/export/export-model.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadAdapter } from '../engine/lora/peft.ts';
import { parseModelConfig } from '../engine/models/config.ts';
import { workerPriority } from '../jobs/worker/start-training-worker.ts';
import { nowSeconds, randomAlnum } from '../store/ids.ts';
import type { FineTunedModelRow } from '../store/store.ts';
import type { AppContext } from './context.ts';
import { badRequest } from './errors.ts';
import { disconnectSignal, isAbort, modelNotFound } from './generation.ts';
import { namedFilesUpload } from './multipart.ts';
import { validate, type BodyOf, type QueryOf } from './validation.ts';

/** Where imported adapters live, relative to the data directory (one folder per imported model). */
const IMPORTS_DIR = 'imports';

/** The files a download is made of while it is being sent; removed afterwards (and at the next start, when interrupted). */
const EXPORTS_TMP = join('tmp', 'exports');

/** What a stopped server left: downloads being sent, and imports that died between their folder and their row. */
export async function removeInterruptedTransfers(ctx: AppContext): Promise<void> {
  rmSync(join(ctx.config.dataDir, EXPORTS_TMP), { recursive: true, force: true });
  const importsDir = join(ctx.config.dataDir, IMPORTS_DIR);
  if (existsSync(importsDir)) await ctx.catalog.removeUnusedAdapterDirs(readdirSync(importsDir).map((name) => join(importsDir, name)));
}

export function modelTransferRouter(ctx: AppContext): Router {
  const IMPORT_PARTS = { fields: ['adapter_config', 'adapter_model'], maxBytes: ctx.config.maxUploadBytes, tooLargeMessage: 'Adapter file is too large for this server (see --max-upload-mb).' };
  const router = Router();
  const dataDir = ctx.config.dataDir;
  mkdirSync(join(dataDir, EXPORTS_TMP), { recursive: true });
  const importsDir = join(dataDir, IMPORTS_DIR);

  /** A model id of the project (aliases followed) → its base model folder and adapter folder (null for a base model). 404 otherwise. */
  async function locate(project: string, id: string): Promise<{ modelDir: string; adapterDir: string | null }> {
    const model = await ctx.catalog.find(project, id);
    if (!model) throw modelNotFound(id);
    return { modelDir: ctx.catalog.baseModelDir(model.baseModel), adapterDir: model.kind === 'fine-tuned' ? await ctx.catalog.adapterDirOf(model.row) : null };
  }

  router.get('/models/:model/export', validate('exportModel'), async (req, res) => {
    const id = req.params.model as string;
    const q = req.validQuery as QueryOf<'exportModel'>;
    const { modelDir, adapterDir } = await locate(req.project, id);
    const format = q.format;
    const dtype = q.dtype ?? null;
    try {
      checkExportRequest(format, dtype, adapterDir !== null);
    } catch (err) {
      if (err instanceof ExportRefused) throw badRequest(err.message, err.param, 'export_not_supported');
      throw err;
    }
    const work = await mkdtemp(join(dataDir, EXPORTS_TMP, 'export-'));
    try {
      const name = exportFileName(id, format, dtype);
      const out = join(work, name);
      let files: string[];
      try {
        files = await exportInChildProcess({ modelDir, adapterDir, modelId: id, format, dtype, out }, { signal: disconnectSignal(req, res), priority: workerPriority() });
      } catch (err) {
        // Messages name the base model's folder: show its model id, not the server's path.
        if (err instanceof ExportRefused) throw badRequest(err.message.replaceAll(modelDir, basename(modelDir)), err.param, 'export_not_supported');
        throw err;
      }
      const single = isSingleFile(format);
      res.setHeader('content-type', single ? 'application/octet-stream' : 'application/x-tar');
      res.setHeader('content-disposition', `attachment; filename="${single ? name : `${name}.tar`}"`);
      const body = single ? createReadStream(out) : createTar({ cwd: out, portable: true }, files);
      await pipeline(body, res);
    } catch (err) {
      // A client that hangs up mid-download is not a server error.
      if (isAbort(err) || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') return;
      throw err;
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  router.post('/models/import', namedFilesUpload(ctx.store.blobs, IMPORT_PARTS), validate('importModel'), async (req, res) => {
    const body = req.body as BodyOf<'importModel'>;
    const parts = (req.files ?? {}) as Record<string, Express.Multer.File[] | undefined>;
    const configPart = parts.adapter_config?.[0];
    const weightsPart = parts.adapter_model?.[0];
    if (!configPart) throw badRequest("Missing required parameter: 'adapter_config'.", 'adapter_config', 'missing_required_parameter');
    if (!weightsPart) throw badRequest("Missing required parameter: 'adapter_model'.", 'adapter_model', 'missing_required_parameter');
    const found = await ctx.catalog.find(req.project, body.base_model);
    if (found?.kind !== 'base') throw badRequest(`base_model ${JSON.stringify(body.base_model)} is not a base model of this server (GET /v1/models lists them).`, 'base_model', 'model_not_found');
    const base = found.baseModel;

    // The adapter is checked in a staging folder and moved into place only when it loads; a row is added last.
    const staging = join(importsDir, `.staging-${randomAlnum(12)}`);
    mkdirSync(staging, { recursive: true });
    try {
      renameSync(configPart.path, join(staging, ADAPTER_CONFIG_FILE));
      renameSync(weightsPart.path, join(staging, ADAPTER_WEIGHTS_FILE));
      const modelConfig = parseModelConfig(JSON.parse(readFileSync(join(ctx.catalog.baseModelDir(base), 'config.json'), 'utf8')));
      try {
        loadAdapter(staging, modelConfig);
      } catch (err) {
        const message = (err as Error).message.replaceAll(`${staging}/`, '').replaceAll(staging, 'the upload');
        throw badRequest(`The adapter cannot be used with ${base}: ${message}`, message.startsWith(ADAPTER_CONFIG_FILE) ? 'adapter_config' : 'adapter_model', 'invalid_adapter');
      }
      const suffix = (body.suffix ?? 'imported').replace(/[^A-Za-z0-9._-]/g, '-');
      const key = randomAlnum(8);
      const id = `ft:${base}:${req.project}:${suffix}:${key}`;
      const dir = join(importsDir, key);
      renameSync(staging, dir);
      const row: FineTunedModelRow = { id, project: req.project, base_model: base, adapter_dir: ctx.catalog.storedAdapterDir(dir, importsDir), job_id: null, step: null, created_at: nowSeconds(), base_precision: 'fp32' };
      try {
        await ctx.store.dirs.publish(row.adapter_dir);
        await ctx.store.models.insert(row);
      } catch (err) {
        await ctx.store.dirs.remove(row.adapter_dir);
        throw err;
      }
      res.json({ id, object: 'model', created: row.created_at, owned_by: row.project, parent: base });
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  });

  return router;
}
