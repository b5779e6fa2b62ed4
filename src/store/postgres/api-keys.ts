// API keys on PostgreSQL: only their sha256 is stored; a key maps to the project that owns everything it creates.
import type { ApiKeyRow, ApiKeyStore } from '../store.ts';
import { hashKey, newApiKey, nowSeconds } from '../ids.ts';
import type { Db } from './db.ts';

export function apiKeyStore(db: Db): ApiKeyStore {
  return {
    async create(project) {
      const made = newApiKey(project);
      await db.query('INSERT INTO api_keys (id, project, key_hash, key_prefix, created_at) VALUES ($1, $2, $3, $4, $5)',
        [made.row.id, project, hashKey(made.key), made.row.key_prefix, made.row.created_at]);
      return made;
    },
    async list() {
      return (await db.query<ApiKeyRow>('SELECT id, project, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at, seq')).rows;
    },
    async revoke(id) {
      return (await db.query('UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [nowSeconds(), id])).rowCount === 1;
    },
    async projectOf(key) {
      return (await db.query<{ project: string }>('SELECT project FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL', [hashKey(key)])).rows[0]?.project;
    },
    async hasActiveKeys() {
      return (await db.query('SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1')).rowCount === 1;
    },
  };
}
