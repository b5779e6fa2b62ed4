// Shared directories on the embedded engine: there is one node, so a key is simply its folder in the data directory.
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { SharedDirs } from '../store.ts';
import { dataDirFolder } from '../data-dir.ts';

export function sharedDirs(dataDir: string): SharedDirs {
  const localDir = (key: string) => dataDirFolder(dataDir, key);
  return {
    localDir,
    publish: async (key) => void localDir(key),
    fetch: async (key) => (existsSync(localDir(key)) ? localDir(key) : undefined),
    remove: (key) => rm(localDir(key), { recursive: true, force: true }),
  };
}
