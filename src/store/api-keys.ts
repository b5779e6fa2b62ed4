// API keys: only their sha256 is stored; a key maps to the project that owns everything it creates.
import { createHash } from 'node:crypto';
import type { Db } from './db.ts';
import { newId, nowSeconds, randomAlnum } from './ids.ts';

export interface ApiKeyRow {
  id: string;
  project: string;
  key_prefix: string;
  created_at: number;
  revoked_at: number | null;
}

export interface ApiKeyStore {
  /** Makes a key for `project`; the plaintext is returned here once and never stored. */
  create(project: string): { key: string; row: ApiKeyRow };
  list(): ApiKeyRow[];
  /** Revokes by key id (`key_…`); false when there is no such active key. */
  revoke(id: string): boolean;
  /** The project of an active key, or undefined. */
  projectOf(key: string): string | undefined;
  /** Whether any active key exists (no keys means the server runs open, on localhost only). */
  hasActiveKeys(): boolean;
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function apiKeyStore(db: Db): ApiKeyStore {
  const insert = db.prepare('INSERT INTO api_keys (id, project, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?, ?)');
  const all = db.prepare('SELECT id, project, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at, rowid');
  const revoke = db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL');
  const byHash = db.prepare('SELECT project FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL');
  const anyActive = db.prepare('SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1');
  return {
    create(project) {
      const key = `sk-lt-${randomAlnum(40)}`;
      const row: ApiKeyRow = { id: newId('key_', 16), project, key_prefix: key.slice(0, 10), created_at: nowSeconds(), revoked_at: null };
      insert.run(row.id, project, hashKey(key), row.key_prefix, row.created_at);
      return { key, row };
    },
    list: () => all.all() as ApiKeyRow[],
    revoke: (id) => revoke.run(nowSeconds(), id).changes === 1,
    projectOf: (key) => (byHash.get(hashKey(key)) as { project: string } | undefined)?.project,
    hasActiveKeys: () => anyActive.get() !== undefined,
  };
}
