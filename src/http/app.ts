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
import { fineTuningJobsRouter } from './fine-tuning-jobs.ts';
import { uploadsRouter } from './uploads.ts';
import { apiKeyStore } from '../store/api-keys.ts';

/** `x-request-id` on every response (the SDKs expose it as `requestID` / `_request_id`). */
const requestId: RequestHandler = (req, res, next) => {
  req.requestId = `req_${randomBytes(16).toString('hex')}`;
  res.setHeader('x-request-id', req.requestId);
  next();
};

/** The resource routers, mounted under /v1 in this order. Add a new resource's router here. */
function resourceRouters(ctx: AppContext): Router[] {
  return [filesRouter(ctx), uploadsRouter(ctx), fineTuningJobsRouter(ctx), modelsRouter(ctx), chatCompletionsRouter(ctx), completionsRouter(ctx)];
}

/** `requireKeys`: the server listens beyond loopback, so /v1 never runs without keys (see authenticate). */
export function createApp(ctx: AppContext, o: { requireKeys: boolean }): Express {
  const app = express();
  app.disable('x-powered-by');
  // qs parsing so `metadata[key]=value` and `a[]=x` arrive as objects and arrays.
  app.set('query parser', 'extended');
  app.use(requestId);
  app.use(express.json({ limit: ctx.config.maxJsonBytes, type: ['application/json', 'application/*+json'] }));

  const v1 = express.Router();
  v1.use(authenticate(apiKeyStore(ctx.db), ctx.config.apiKeys, { requireKeys: o.requireKeys, log: ctx.log }));
  for (const router of resourceRouters(ctx)) v1.use(router);
  app.use('/v1', v1);
  app.use(dashboardRouter());

  app.use(unknownRoute);
  app.use(errorHandler(ctx.log));
  return app;
}
