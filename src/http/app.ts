// The express application: request ids, JSON parsing, auth and one router per resource under /v1, the dashboard's static files, then the error envelope.
import express, { type Express, type RequestHandler, type Router } from 'express';
import { randomBytes } from 'node:crypto';
import type { AppContext } from './context.ts';
import { authenticate } from './auth.ts';
import { errorHandler, unknownRoute } from './errors.ts';
import { filesRouter } from './files.ts';
import { chatCompletionsRouter } from './chat-completions.ts';
import { dashboardRouter } from './dashboard.ts';
import { completionsRouter } from './completions.ts';
import { modelsRouter } from './models.ts';
import { modelTransferRouter } from './model-transfer.ts';
import { fineTuningJobsRouter } from './fine-tuning-jobs.ts';
import { uploadsRouter } from './uploads.ts';
import { metricsRouter } from './metrics.ts';

/** `x-request-id` on every response (the SDKs expose it as `requestID` / `_request_id`). */
const requestId: RequestHandler = (req, res, next) => {
  req.requestId = `req_${randomBytes(16).toString('hex')}`;
  res.setHeader('x-request-id', req.requestId);
  next();
};

/** The resource routers, mounted under /v1 in this order. Add a new resource's router here. */
function resourceRouters(ctx: AppContext): Router[] {
  return [filesRouter(ctx), uploadsRouter(ctx), fineTuningJobsRouter(ctx), modelTransferRouter(ctx), modelsRouter(ctx), chatCompletionsRouter(ctx), completionsRouter(ctx)];
}

/** `requireKeys`: the server listens beyond loopback, so /v1 never runs without keys (see authenticate). */
export function createApp(ctx: AppContext, o: { requireKeys: boolean; keysAtStart: boolean }): Express {
  const app = express();
  app.disable('x-powered-by');
  // qs parsing so `metadata[key]=value` and `a[]=x` arrive as objects and arrays.
  app.set('query parser', 'extended');
  app.use(requestId);
  app.use(express.json({ limit: ctx.config.maxJsonBytes, type: ['application/json', 'application/*+json'] }));

  const v1 = express.Router();
  const auth = authenticate(ctx.store.keys, ctx.config.apiKeys, { requireKeys: o.requireKeys, keysAtStart: o.keysAtStart, log: ctx.log });
  v1.use(ctx.metrics.http);
  v1.use(auth);
  for (const router of resourceRouters(ctx)) v1.use(router);
  app.use('/v1', v1);
  // Server-wide numbers (every project's model ids among them): behind the same keys as /v1 when keys exist.
  app.use(metricsRouter(ctx.metrics, auth));
  app.use(dashboardRouter());

  app.use(unknownRoute);
  app.use(errorHandler(ctx.log));
  return app;
}
