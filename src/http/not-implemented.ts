// Every operation in openapi.yaml that no router has answered yet: validated like a real route, then a 501 envelope.
import { Router } from 'express';
import { openapi } from '../contract.ts';
import { ApiError } from './errors.ts';
import { validate, type OperationId } from './validation.ts';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

/** Mounted after the real routers under /v1, so an implemented route always wins. */
export function notImplementedRouter(): Router {
  const router = Router();
  for (const [path, item] of Object.entries(openapi.paths)) {
    const expressPath = path.replace(/\{([^}]+)\}/g, ':$1');
    for (const method of METHODS) {
      if (!item[method]) continue;
      router[method](expressPath, validate(item[method].operationId as OperationId), () => {
        throw new ApiError(501, `${method.toUpperCase()} /v1${path} is part of the API but not implemented in this build yet.`, { code: 'not_implemented' });
      });
    }
  }
  return router;
}
