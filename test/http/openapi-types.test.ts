// The generated TypeScript types must match openapi.yaml: run `npm run gen:types` after editing the contract.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { generateTypes, typesPath } from '../../scripts/gen-types.ts';

test('src/http/openapi-types.ts is up to date with openapi.yaml', async () => {
  const committed = readFileSync(typesPath, 'utf8');
  assert.ok(committed === (await generateTypes()), 'src/http/openapi-types.ts is stale: run `npm run gen:types`');
});
