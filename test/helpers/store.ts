// The store a test server on `dataDir` uses, opened from the test itself: to register models trained in the test, or to look at rows.
import { openStore } from '../../src/store/open.ts';
import type { FineTunedModelRow, Store } from '../../src/store/store.ts';

/** Opens the store of a test server's data directory (the same engine the server runs on). */
export function openTestStore(dataDir: string): Promise<Store> {
  return openStore({ dataDir });
}

/** Registers an adapter folder (`row.adapter_dir`, under the data dir) as a servable `ft:` model, as a finished job would. */
export async function registerFineTunedModel(dataDir: string, row: FineTunedModelRow): Promise<void> {
  const store = await openTestStore(dataDir);
  try {
    await store.dirs.publish(row.adapter_dir);
    await store.models.insert(row);
  } finally {
    await store.close();
  }
}
