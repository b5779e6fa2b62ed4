// /v1/fine_tuning/jobs: create (validated, then queued for the scheduler), list, retrieve, cancel, pause, resume, events, checkpoints.
import { Router } from 'express';
import { randomInt } from 'node:crypto';
import { resolveBasePrecision } from '../jobs/base-precision.ts';
import { TransitionRefused } from '../jobs/lifecycle.ts';
import { loraFromRequest, loraToWire } from '../jobs/lora-settings.ts';
import { TRAINABLE_METHODS } from '../jobs/methods.ts';
import type { RequestedHyperparameters } from '../jobs/validate-files.ts';
import type { CheckpointRow, EventRow, FineTunedModelRow, JobRow } from '../store/store.ts';
import { newId, nowSeconds } from '../store/ids.ts';
import type { AppContext } from './context.ts';
import { badRequest, noSuchObject } from './errors.ts';
import type { components } from './openapi-types.ts';
import { validate, type BodyOf, type QueryOf } from './validation.ts';

type JobObject = components['schemas']['FineTuningJob'];
type CreateBody = BodyOf<'createFineTuningJob'>;

export function toJobObject(row: JobRow): JobObject {
  const requested = JSON.parse(row.hyperparameters) as RequestedHyperparameters;
  const resolved = row.resolved_hyperparameters === null ? null : (JSON.parse(row.resolved_hyperparameters) as RequestedHyperparameters);
  // "auto" until the files are validated, then the numbers used, as the hosted service shows them.
  const { beta, rpo_alpha, ...hyperparameters } = resolved ?? requested;
  return {
    id: row.id,
    object: 'fine_tuning.job',
    created_at: row.created_at,
    // Not failed: every member null, as the hosted service answers (scripts read job.error.message).
    error: { code: row.error_code, message: row.error_message, param: row.error_param },
    fine_tuned_model: row.fine_tuned_model,
    finished_at: row.finished_at,
    hyperparameters: hyperparameters as JobObject['hyperparameters'],
    model: row.model,
    organization_id: row.project,
    result_files: row.result_file === null ? [] : [row.result_file],
    status: row.status,
    trained_tokens: row.trained_tokens,
    training_file: row.training_file,
    validation_file: row.validation_file,
    seed: row.seed,
    estimated_finish: row.estimated_finish,
    integrations: [],
    method: row.method === 'dpo'
      ? { type: 'dpo', dpo: { hyperparameters: { ...hyperparameters, beta, rpo_alpha } as never } }
      : { type: 'supervised', supervised: { hyperparameters: hyperparameters as JobObject['hyperparameters'] } },
    metadata: row.metadata === null ? null : (JSON.parse(row.metadata) as Record<string, string>),
    user_provided_suffix: row.suffix,
    lora: loraToWire(JSON.parse(row.lora)),
    base_precision: row.base_precision,
  };
}

function toEventObject(row: EventRow) {
  return {
    id: row.id,
    object: 'fine_tuning.job.event' as const,
    created_at: row.created_at,
    level: row.level,
    message: row.message,
    type: row.type,
    data: row.data === null ? null : (JSON.parse(row.data) as Record<string, unknown>),
  };
}

function toCheckpointObject(row: CheckpointRow) {
  return {
    id: row.id,
    object: 'fine_tuning.job.checkpoint' as const,
    created_at: row.created_at,
    fine_tuned_model_checkpoint: row.fine_tuned_model_checkpoint,
    fine_tuning_job_id: row.job_id,
    step_number: row.step_number,
    metrics: JSON.parse(row.metrics) as Record<string, number>,
  };
}

const notFound = (id: string) => noSuchObject('FineTuningJob', id, 'fine_tuning_job_id');

/** The method's own hyperparameters, or the deprecated top-level ones; both at once would be ambiguous. */
function requestedHyperparameters(body: CreateBody, method: 'supervised' | 'dpo'): RequestedHyperparameters {
  const inMethod = method === 'dpo' ? body.method?.dpo?.hyperparameters : body.method?.supervised?.hyperparameters;
  if (inMethod && body.hyperparameters) {
    throw badRequest(`Give hyperparameters either in 'method.${method}.hyperparameters' or in the deprecated top-level 'hyperparameters', not both.`, 'hyperparameters');
  }
  const given = (inMethod ?? body.hyperparameters ?? {}) as RequestedHyperparameters;
  const auto: RequestedHyperparameters = { n_epochs: 'auto', batch_size: 'auto', learning_rate_multiplier: 'auto', ...(method === 'dpo' ? { beta: 'auto' as const, rpo_alpha: 'auto' as const } : {}) };
  return { ...auto, ...given };
}

export function fineTuningJobsRouter(ctx: AppContext): Router {
  const router = Router();
  const { jobs, files } = ctx.store;

  /** `model` (or its alias) → the local base model and, for an `ft:` model of the project, the model whose adapter training continues from. */
  async function resolveTrainingModel(project: string, model: string): Promise<{ base: string; start: FineTunedModelRow | null }> {
    const found = await ctx.catalog.find(project, model);
    if (found) return { base: found.baseModel, start: found.kind === 'fine-tuned' ? found.row : null };
    throw badRequest(`Model ${model} is not available for fine-tuning or does not exist. Use a base model listed by GET /v1/models, an alias, or one of your ft: models.`, 'model', 'model_not_available');
  }

  async function checkFile(project: string, id: string, param: 'training_file' | 'validation_file') {
    const file = await files.get(project, id);
    if (!file) throw badRequest(`invalid ${param}: ${id} (no such file in this project)`, param, 'invalid_file');
    if (file.purpose !== 'fine-tune') throw badRequest(`invalid ${param}: ${id} has purpose '${file.purpose}'; fine-tuning needs a file uploaded with purpose 'fine-tune'.`, param, 'invalid_file_purpose');
  }

  /** Runs a state change; a refused one is a 400 naming the job's status. */
  async function change(project: string, id: string, apply: (id: string) => Promise<JobRow>): Promise<JobRow> {
    if (!(await jobs.get(project, id))) throw notFound(id);
    try {
      return await apply(id);
    } catch (err) {
      if (err instanceof TransitionRefused) throw badRequest(err.message, null, 'invalid_job_status');
      throw err;
    }
  }

  router.post('/fine_tuning/jobs', validate('createFineTuningJob'), async (req, res) => {
    const body = req.body as CreateBody;
    if (body.integrations && body.integrations.length > 0) {
      throw badRequest('localtune supports no fine-tuning integrations (such as wandb); leave out `integrations`.', 'integrations', 'unsupported_integration');
    }
    const method = body.method?.type ?? 'supervised';
    if (!TRAINABLE_METHODS.has(method)) {
      throw badRequest(`Fine-tuning method '${method}' is not supported by this server (supported: ${[...TRAINABLE_METHODS].join(', ')}).`, 'method.type', 'unsupported_method');
    }
    const hyperparameters = requestedHyperparameters(body, method as 'supervised' | 'dpo');
    const { base, start } = await resolveTrainingModel(req.project, body.model);
    await checkFile(req.project, body.training_file, 'training_file');
    if (body.validation_file) await checkFile(req.project, body.validation_file, 'validation_file');
    let lora: string;
    try {
      lora = JSON.stringify(loraFromRequest(body.lora ?? {}));
    } catch (err) {
      throw badRequest(`Invalid value for 'lora': ${(err as Error).message}.`, 'lora', 'invalid_value');
    }
    const basePrecision = resolveBasePrecision(body.base_precision, ctx.catalog.baseModelDir(base), start?.base_precision ?? null);
    const id = newId('ftjob-');
    const row: JobRow = {
      id,
      project: req.project,
      created_at: nowSeconds(),
      status: 'validating_files',
      model: body.model,
      base_model: base,
      start_model: start?.id ?? null,
      method: method as 'supervised' | 'dpo',
      training_file: body.training_file,
      validation_file: body.validation_file ?? null,
      hyperparameters: JSON.stringify(hyperparameters),
      resolved_hyperparameters: null,
      lora,
      suffix: body.suffix ?? null,
      // "If a seed is not specified, one will be generated for you"; the job always reports it.
      seed: body.seed ?? randomInt(2147483647),
      metadata: body.metadata ? JSON.stringify(body.metadata) : null,
      fine_tuned_model: null,
      finished_at: null,
      error_code: null,
      error_message: null,
      error_param: null,
      trained_tokens: null,
      total_steps: null,
      estimated_finish: null,
      result_file: null,
      queued_at: null,
      base_precision: basePrecision,
      owner: null,
      lease_expires_at: null,
    };
    const validating = row.validation_file
      ? `Validating training file: ${row.training_file} and validation file: ${row.validation_file}`
      : `Validating training file: ${row.training_file}`;
    await jobs.insert(row, [{ message: `Created fine-tuning job: ${id}` }, { message: validating }]);
    await ctx.jobs.submit(id);
    res.json(toJobObject(row));
  });

  router.get('/fine_tuning/jobs', validate('listFineTuningJobs'), async (req, res) => {
    const q = req.validQuery as QueryOf<'listFineTuningJobs'>;
    const metadata = q.metadata === undefined ? undefined : typeof q.metadata === 'string' ? null : q.metadata;
    const page = await jobs.list(req.project, { limit: q.limit ?? 20, after: q.after, metadata });
    if (!page) throw badRequest(`No such FineTuningJob object: ${q.after} (the 'after' cursor must be the id of a listed job).`, 'after');
    res.json({ object: 'list', data: page.rows.map(toJobObject), has_more: page.hasMore });
  });

  router.get('/fine_tuning/jobs/:fine_tuning_job_id', validate('retrieveFineTuningJob'), async (req, res) => {
    const id = req.params.fine_tuning_job_id as string;
    const row = await jobs.get(req.project, id);
    if (!row) throw notFound(id);
    res.json(toJobObject(row));
  });

  router.post('/fine_tuning/jobs/:fine_tuning_job_id/cancel', validate('cancelFineTuningJob'), async (req, res) => {
    res.json(toJobObject(await change(req.project, req.params.fine_tuning_job_id as string, ctx.jobs.cancel)));
  });

  router.post('/fine_tuning/jobs/:fine_tuning_job_id/pause', validate('pauseFineTuningJob'), async (req, res) => {
    res.json(toJobObject(await change(req.project, req.params.fine_tuning_job_id as string, ctx.jobs.pause)));
  });

  router.post('/fine_tuning/jobs/:fine_tuning_job_id/resume', validate('resumeFineTuningJob'), async (req, res) => {
    res.json(toJobObject(await change(req.project, req.params.fine_tuning_job_id as string, ctx.jobs.resume)));
  });

  router.get('/fine_tuning/jobs/:fine_tuning_job_id/events', validate('listFineTuningEvents'), async (req, res) => {
    const id = req.params.fine_tuning_job_id as string;
    const q = req.validQuery as QueryOf<'listFineTuningEvents'>;
    if (!(await jobs.get(req.project, id))) throw notFound(id);
    const page = await jobs.listEvents(id, { after: q.after, limit: q.limit ?? 20 });
    if (!page) throw badRequest(`No such event of job ${id}: ${q.after} (the 'after' cursor must be the id of a listed event).`, 'after');
    res.json({ object: 'list', data: page.rows.map(toEventObject), has_more: page.hasMore });
  });

  router.get('/fine_tuning/jobs/:fine_tuning_job_id/checkpoints', validate('listFineTuningJobCheckpoints'), async (req, res) => {
    const id = req.params.fine_tuning_job_id as string;
    const q = req.validQuery as QueryOf<'listFineTuningJobCheckpoints'>;
    if (!(await jobs.get(req.project, id))) throw notFound(id);
    const page = await jobs.listCheckpoints(id, { after: q.after, limit: q.limit ?? 10 });
    if (!page) throw badRequest(`No such checkpoint of job ${id}: ${q.after} (the 'after' cursor must be the id of a listed checkpoint).`, 'after');
    const data = page.rows.map(toCheckpointObject);
    res.json({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore });
  });

  return router;
}
