// What every router is built from (AppContext), and the fields our middleware adds to express requests.
import type { Config } from '../config.ts';
import type { Store } from '../store/store.ts';
import type { ModelPool } from '../engine/serve/model-pool.ts';
import type { ModelCatalog } from '../jobs/model-catalog.ts';
import type { JobScheduler } from '../jobs/scheduler.ts';
import type { Metrics } from './metrics.ts';

export interface AppContext {
  config: Config;
  /** Every table and blob, on whichever engine the configuration chose. */
  store: Store;
  /** The server's log (one line per call): what went wrong where no response can say it, and state changes. */
  log: (line: string) => void;
  /** Model ids (aliases followed) → base model folders and fine-tuned adapter folders. */
  catalog: ModelCatalog;
  /** Served base models (loaded on first request) and their adapter cache. */
  models: ModelPool;
  /** Fine-tuning jobs: validation, queue, training workers, cancel/pause/resume. */
  jobs: JobScheduler;
  /** The Prometheus registry GET /metrics serves, and the hooks that feed it. */
  metrics: Metrics;
}

declare global {
  namespace Express {
    interface Request {
      /** Set on every request; also sent back as the `x-request-id` header. */
      requestId: string;
      /** The project the API key belongs to ("default" when no keys are configured). Set on every /v1 request. */
      project: string;
      /** The query string after `validate(operationId)`: coerced to the contract's types, defaults filled in. */
      validQuery: Record<string, unknown>;
    }
  }
}
