// API keys on SQLite: only their sha256 is stored; a key maps to the project that owns everything it creates.
import type { Db } from './db.ts';
import { hashKey, newApiKey, nowSeconds } from '../ids.ts';
import type { ApiKeyRow, ApiKeyStore } from '../store.ts';

export function apiKeyStore(db: Db): ApiKeyStore {
  const insert = db.prepare('INSERT INTO api_keys (id, project, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?, ?)');
  const all = db.prepare('SELECT id, project, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at, rowid');
  const revoke = db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL');
  const byHash = db.prepare('SELECT project FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL');
  const anyActive = db.prepare('SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1');
  return {
    async create(project) {
      const made = newApiKey(project);
      insert.run(made.row.id, project, hashKey(made.key), made.row.key_prefix, made.row.created_at);
      return made;
    },
    list: async () => all.all() as ApiKeyRow[],
    revoke: async (id) => revoke.run(nowSeconds(), id).changes === 1,
    projectOf: async (key) => (byHash.get(hashKey(key)) as { project: string } | undefined)?.project,
    hasActiveKeys: async () => anyActive.get() !== undefined,
  };
}
