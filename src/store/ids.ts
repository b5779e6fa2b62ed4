// Object ids in the hosted API's style (a prefix and random alphanumerics: `file-` + 24, `ftjob-` + 24, …), times, and API keys.
import { createHash, randomInt } from 'node:crypto';
import type { ApiKeyRow } from './store.ts';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** `length` characters from [A-Za-z0-9], uniformly, from the CSPRNG. */
export function randomAlnum(length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += ALNUM[randomInt(ALNUM.length)];
  return s;
}

/** A fresh id: `newId('file-')` → `file-QWIeICryqfMQzigKLW7rIH3T`. */
export function newId(prefix: string, length = 24): string {
  return prefix + randomAlnum(length);
}

/** Unix seconds, the unit of every `created_at` in the API. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** Keys are stored only as their sha256. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** A fresh API key for `project`: the plaintext (shown once) and the row every engine stores beside its hash. */
export function newApiKey(project: string): { key: string; row: ApiKeyRow } {
  const key = `sk-lt-${randomAlnum(40)}`;
  return { key, row: { id: newId('key_', 16), project, key_prefix: key.slice(0, 10), created_at: nowSeconds(), revoked_at: null } };
}
