// Bearer-key authentication for /v1: sets req.project, or answers 401. Open (project "default") only on a loopback server while no keys exist.
import type { RequestHandler } from 'express';
import type { ApiKeyGrant } from '../config.ts';
import { DEFAULT_PROJECT } from '../contract.ts';
import { hashKey } from '../store/ids.ts';
import type { ApiKeyStore } from '../store/store.ts';
import { ApiError } from './errors.ts';

/** Whether the server must check keys: any configured grant or any active stored key. */
export async function keysConfigured(keys: ApiKeyStore, grants: readonly ApiKeyGrant[]): Promise<boolean> {
  return grants.length > 0 || keys.hasActiveKeys();
}

export interface AuthOptions {
  /**
   * The server listens beyond loopback: a valid key is always required, so revoking the last key leaves it refusing
   * every request instead of open to the network. On loopback, no keys means open (the local single-user setup).
   */
  requireKeys: boolean;
  log: (line: string) => void;
}

/** Keys come from the database (`localtune keys create`) and from configuration (`LOCALTUNE_API_KEYS`). */
export function authenticate(keys: ApiKeyStore, grants: readonly ApiKeyGrant[], o: AuthOptions & { keysAtStart: boolean }): RequestHandler {
  // Configured keys are compared by hash too, so no plaintext comparison leaks timing.
  const granted = new Map(grants.map((g) => [hashKey(g.key), g.project]));
  const projectOf = async (key: string) => granted.get(hashKey(key)) ?? keys.projectOf(key);
  // Logged when it changes while the server runs (the start-up lines say how it began).
  let hadKeys = o.keysAtStart;
  return async (req, _res, next) => {
    // Checked per request so a key created or revoked while the server runs takes effect at once.
    const hasKeys = await keysConfigured(keys, grants);
    if (hasKeys !== hadKeys) {
      hadKeys = hasKeys;
      if (hasKeys) o.log('API keys exist now: every /v1 request needs a valid key');
      else if (o.requireKeys) o.log('no active API keys left: refusing every /v1 request (this server listens beyond loopback, so it never runs open); create one with `localtune keys create --project NAME`');
      else o.log('no active API keys left: accepting any bearer token (project "default") on this loopback server');
    }
    if (!hasKeys && !o.requireKeys) {
      req.project = DEFAULT_PROJECT;
      return next();
    }
    if (!hasKeys) {
      return next(new ApiError(401, 'This server has no active API keys, so it accepts no request. Its operator can create one with `localtune keys create --project NAME`.', { type: 'invalid_request_error', code: 'invalid_api_key' }));
    }
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) {
      return next(new ApiError(401, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", { type: 'invalid_request_error' }));
    }
    const project = await projectOf(match[1]!);
    if (!project) {
      const shown = match[1]!.length > 8 ? `${match[1]!.slice(0, 6)}…${match[1]!.slice(-4)}` : '***';
      return next(new ApiError(401, `Incorrect API key provided: ${shown}.`, { type: 'invalid_request_error', code: 'invalid_api_key' }));
    }
    req.project = project;
    next();
  };
}
