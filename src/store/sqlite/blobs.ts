// File contents on disk (the embedded engine's blobs): `<data>/files/<id>` (and upload parts in `<data>/upload-parts/<id>`),
// written through a temp file + fsync + rename so a crash never leaves half a blob.
import { createReadStream, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomAlnum } from '../ids.ts';
import type { BlobStore } from '../store.ts';

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Blobs under `<dataDir>/<folder>`, temp files under `<dataDir>/tmp/uploads`. Ids are ours, never user input. */
export function blobStore(dataDir: string, folder: 'files' | 'upload-parts' = 'files'): BlobStore {
  const dir = join(dataDir, folder);
  const tmp = join(dataDir, 'tmp', 'uploads');
  mkdirSync(dir, { recursive: true });
  mkdirSync(tmp, { recursive: true });
  const pathOf = (id: string) => {
    if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new Error(`blob id '${id}' has characters outside [A-Za-z0-9_-]`);
    return join(dir, id);
  };
  const store: BlobStore = {
    tempPath: () => join(tmp, `${Date.now()}-${randomAlnum(12)}`),
    async commit(tempPath, id) {
      await fsyncPath(tempPath);
      await rename(tempPath, pathOf(id));
      // The rename lives in the directory entry: sync the directory too.
      await fsyncPath(dir);
    },
    async write(id, data) {
      const temp = store.tempPath();
      await writeFile(temp, data);
      await store.commit(temp, id);
    },
    read: (id) => createReadStream(pathOf(id)),
    localPath: async (id) => pathOf(id),
    remove: (id) => rm(pathOf(id), { force: true }),
    async recover(isKnown) {
      const temps = readdirSync(tmp);
      for (const name of temps) rmSync(join(tmp, name), { force: true, recursive: true });
      const orphans: string[] = [];
      for (const name of readdirSync(dir)) if (!(await isKnown(name))) orphans.push(name);
      for (const name of orphans) rmSync(join(dir, name), { force: true });
      return { temp: temps.length, orphans: orphans.length };
    },
  };
  return store;
}
