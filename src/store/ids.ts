// Object ids in the hosted API's style: a prefix and random alphanumerics (`file-` + 24, `ftjob-` + 24, …).
import { randomInt } from 'node:crypto';

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
