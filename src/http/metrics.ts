// Prometheus metrics (prom-client): the server's one registry, what HTTP, serving and training report into it, and GET /metrics.
// Counters and histograms are fed as things happen; gauges of state (queues, adapter cache, jobs by status) are read at scrape time.
import { Router, type RequestHandler } from 'express';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ModelPoolStats, ServingObserver } from '../engine/serve/model-pool.ts';
import type { FineTuningJobStore } from '../store/store.ts';
import { validate } from './validation.ts';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const TOKEN_LATENCY_BUCKETS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5];

export interface MetricsSources {
  /** The model pool's state (a function: the pool is made after the metrics it reports into). */
  servingStats: () => ModelPoolStats;
  /** The jobs table (a function: the store opens after the metrics that training reports into). */
  jobs: () => FineTuningJobStore;
  maxBatch: number;
}

export interface Metrics {
  registry: Registry;
  /** Counts every request by method, matched route and status, with its latency (first in the router it measures). */
  http: RequestHandler;
  /** Generation and adapter-cache events from the model pool. */
  serving: ServingObserver;
  /** A training worker finished step `step`, having trained `trainedTokens` tokens in all. */
  trainingStep(jobId: string, step: number, trainedTokens: number): void;
}

export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'localtune_process_' });
  const registers = [registry];

  const httpRequests = new Counter({ name: 'localtune_http_requests_total', help: 'HTTP requests by method, route and status.', labelNames: ['method', 'route', 'status'], registers });
  const httpSeconds = new Histogram({ name: 'localtune_http_request_duration_seconds', help: 'HTTP request latency to the last byte (a stream until it ends).', labelNames: ['method', 'route', 'status'], buckets: LATENCY_BUCKETS, registers });

  // Generation, labelled with the model a request named: a base model id or an ft: model (per adapter, as vLLM users ask).
  const promptTokens = new Counter({ name: 'localtune_prompt_tokens_total', help: 'Prompt tokens of finished generation requests.', labelNames: ['model'], registers });
  const generationTokens = new Counter({ name: 'localtune_generation_tokens_total', help: 'Generated tokens of finished generation requests.', labelNames: ['model'], registers });
  const generationRequests = new Counter({ name: 'localtune_generation_requests_total', help: 'Finished generation requests (each of n choices counts).', labelNames: ['model'], registers });
  const firstToken = new Histogram({ name: 'localtune_time_to_first_token_seconds', help: 'From a request joining the queue to its first sampled token.', labelNames: ['model'], buckets: LATENCY_BUCKETS, registers });
  const perToken = new Histogram({ name: 'localtune_time_per_output_token_seconds', help: 'Mean time between output tokens after the first, per request.', labelNames: ['model'], buckets: TOKEN_LATENCY_BUCKETS, registers });
  const batchRows = new Histogram({
    name: 'localtune_decode_batch_rows',
    help: 'Rows decoded together per decode step (batch occupancy; --max-batch is the most).',
    labelNames: ['base_model'],
    buckets: Array.from({ length: sources.maxBatch }, (_, i) => i + 1),
    registers,
  });
  const pool = sources.servingStats;
  new Gauge({
    name: 'localtune_requests_running', help: 'Generation requests decoding now.', labelNames: ['base_model'], registers,
    collect() {
      this.reset();
      for (const m of pool().models) this.set({ base_model: m.id }, m.active);
    },
  });
  new Gauge({
    name: 'localtune_requests_waiting', help: 'Generation requests waiting for a batch slot.', labelNames: ['base_model'], registers,
    collect() {
      this.reset();
      for (const m of pool().models) this.set({ base_model: m.id }, m.waiting);
    },
  });
  new Gauge({ name: 'localtune_max_batch', help: 'Rows one base model decodes together at most (--max-batch).', registers, collect() { this.set(sources.maxBatch); } });

  // Adapter cache: state at scrape time, events per adapter as they happen.
  new Gauge({ name: 'localtune_adapters_loaded', help: 'LoRA adapters held in the serving cache.', registers, collect() { this.set(pool().adapters.keys.length); } });
  new Gauge({
    name: 'localtune_adapter_loaded', help: 'One series per adapter held in the serving cache (value 1).', labelNames: ['model'], registers,
    collect() {
      this.reset();
      for (const key of pool().adapters.keys) this.set({ model: key }, 1);
    },
  });
  new Gauge({ name: 'localtune_adapter_cache_bytes', help: 'Bytes of the adapters held in the serving cache.', registers, collect() { this.set(pool().adapters.bytes); } });
  new Gauge({ name: 'localtune_adapter_cache_budget_bytes', help: 'The serving cache budget (--adapter-cache-mb).', registers, collect() { this.set(pool().adapters.budgetBytes); } });
  const adapterEvents = {
    hit: new Counter({ name: 'localtune_adapter_cache_hits_total', help: 'Requests whose adapter was already in memory.', labelNames: ['model'], registers }),
    miss: new Counter({ name: 'localtune_adapter_cache_misses_total', help: 'Requests whose adapter was loaded from disk.', labelNames: ['model'], registers }),
    evict: new Counter({ name: 'localtune_adapter_cache_evictions_total', help: 'Adapters dropped from the cache (budget, or the model deleted).', labelNames: ['model'], registers }),
  };

  // Training.
  new Gauge({
    name: 'localtune_fine_tuning_jobs', help: 'Fine-tuning jobs by status (all projects).', labelNames: ['status'], registers,
    async collect() {
      const counts = await sources.jobs().countByStatus();
      this.reset();
      for (const [status, n] of Object.entries(counts)) this.set({ status }, n);
    },
  });
  const stepSeconds = new Histogram({ name: 'localtune_training_step_seconds', help: 'Time between consecutive training steps of a job.', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120], registers });
  const trainedTokens = new Counter({ name: 'localtune_training_tokens_total', help: 'Tokens trained on (rate() of it is the tokens/s of all jobs).', registers });
  const lastSteps = new Map<string, { step: number; tokens: number; at: number; tokensPerSecond: number | null }>();
  new Gauge({
    name: 'localtune_training_tokens_per_second', help: 'Tokens per second of each running job over its last step.', labelNames: ['job'], registers,
    async collect() {
      const running = new Set((await sources.jobs().inStatus(['running'])).map((j) => j.id));
      this.reset();
      for (const [job, last] of lastSteps) {
        if (!running.has(job)) lastSteps.delete(job);
        else if (last.tokensPerSecond !== null) this.set({ job }, last.tokensPerSecond);
      }
    },
  });

  return {
    registry,
    http(req, res, next) {
      const end = httpSeconds.startTimer();
      const mount = req.baseUrl; // read now: an error leaving the router restores it before the response ends
      res.on('close', () => {
        // The route pattern (not the path), so ids do not make a series each.
        const route = req.route ? `${mount}${req.route.path}` : 'unmatched';
        const labels = { method: req.method, route, status: String(res.statusCode) };
        httpRequests.inc(labels);
        end(labels);
      });
      next();
    },
    serving: {
      finished(model, r) {
        promptTokens.inc({ model }, r.promptTokens);
        generationTokens.inc({ model }, r.completionTokens);
        generationRequests.inc({ model });
        if (r.firstTokenMs !== null) firstToken.observe({ model }, r.firstTokenMs / 1000);
        if (r.completionTokens > 1) perToken.observe({ model }, r.decodeMs / 1000 / (r.completionTokens - 1));
      },
      decodeStep: (baseModel, rows) => batchRows.observe({ base_model: baseModel }, rows),
      adapterEvent: (event, key) => adapterEvents[event].inc({ model: key }),
    },
    trainingStep(jobId, step, tokens) {
      const now = performance.now();
      const last = lastSteps.get(jobId);
      let tokensPerSecond: number | null = null;
      // Only consecutive steps of one worker (a resumed worker repeats its resume step first).
      if (last && step === last.step + 1) {
        const seconds = (now - last.at) / 1000;
        stepSeconds.observe(seconds);
        trainedTokens.inc(Math.max(0, tokens - last.tokens));
        tokensPerSecond = (tokens - last.tokens) / seconds;
      } else if (!last && step === 1) {
        trainedTokens.inc(tokens);
      }
      lastSteps.set(jobId, { step, tokens, at: now, tokensPerSecond });
    },
  };
}

/** GET /metrics in the Prometheus text format, behind `auth`. */
export function metricsRouter(metrics: Metrics, auth: RequestHandler): Router {
  const router = Router();
  router.get('/metrics', auth, validate('getMetrics'), async (_req, res) => {
    res.setHeader('content-type', metrics.registry.contentType);
    res.send(await metrics.registry.metrics());
  });
  return router;
}
