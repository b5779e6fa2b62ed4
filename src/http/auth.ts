// Bearer-key authentication for /v1: sets req.project, or answers 401. Open (project "default") while no keys exist.
import type { RequestHandler } from 'express';
import type { ApiKeyGrant } from '../config.ts';
import { hashKey, type ApiKeyStore } from '../store/api-keys.ts';
import { DEFAULT_PROJECT } from '../contract.ts';
import { ApiError } from './errors.ts';

/** Whether the server must check keys: any configured grant or any active stored key. */
export function keysConfigured(keys: ApiKeyStore, grants: readonly ApiKeyGrant[]): boolean {
  return grants.length > 0 || keys.hasActiveKeys();
}

/** Keys come from the database (`localtune keys create`) and from configuration (`LOCALTUNE_API_KEYS`). */
export function authenticate(keys: ApiKeyStore, grants: readonly ApiKeyGrant[]): RequestHandler {
  // Configured keys are compared by hash too, so no plaintext comparison leaks timing.
  const granted = new Map(grants.map((g) => [hashKey(g.key), g.project]));
  const projectOf = (key: string) => granted.get(hashKey(key)) ?? keys.projectOf(key);
  return (req, _res, next) => {
    // Checked per request so a key created while the server runs takes effect at once.
    if (!keysConfigured(keys, grants)) {
      req.project = DEFAULT_PROJECT;
      return next();
    }
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      return next(new ApiError(401, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", { type: 'invalid_request_error' }));
    }
    const project = projectOf(match[1]!);
    if (!project) {
      const shown = match[1]!.length > 8 ? `${match[1]!.slice(0, 6)}…${match[1]!.slice(-4)}` : '***';
      return next(new ApiError(401, `Incorrect API key provided: ${shown}.`, { type: 'invalid_request_error', code: 'invalid_api_key' }));
    }
    req.project = project;
    next();
  };
}
