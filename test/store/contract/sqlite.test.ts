// The store contract on the embedded SQLite engine: each data directory is its own deployment.
import { openStore } from '../../../src/store/open.ts';
import { defineStoreContract } from './cases.ts';

defineStoreContract({
  name: 'SQLite',
  sharedNodes: false,
  async deployment() {
    return { open: (dataDir) => openStore({ dataDir }) };
  },
});
