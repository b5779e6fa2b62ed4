// The store a test server on `dataDir` uses, opened from the test itself: to register models trained in the test, or to look at rows.
import { openStore } from '../../src/store/open.ts';
import type { FineTunedModelRow, Store } from '../../src/store/store.ts';

/** A store engine to run servers on: its name and the environment that selects it. */
export interface TestEngine {
  name: 'sqlite' | 'postgres';
  env: Record<string, string>;
}

const SQLITE: TestEngine = { name: 'sqlite', env: {} };

/** The engines available to this run, the embedded one first. */
export async function testEngines(): Promise<TestEngine[]> {
  return [SQLITE];
}

/** Opens the store of a test server's data directory (on `engine`, by default the one servers run on). */
export function openTestStore(dataDir: string, engine: TestEngine = SQLITE): Promise<Store> {
  return openStore({ dataDir, databaseUrl: engine.env.LOCALTUNE_DATABASE_URL });
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
