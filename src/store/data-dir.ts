// Keys of the data directory: stored folder names are relative to it and must never lead outside it.
import { resolve, sep } from 'node:path';

/** The absolute folder a data-directory-relative key names; refuses a key that escapes the data directory. */
export function dataDirFolder(dataDir: string, key: string): string {
  const root = resolve(dataDir);
  const abs = resolve(root, key);
  if (!abs.startsWith(root + sep)) throw new Error(`folder ${key} is outside the data directory`);
  return abs;
}
