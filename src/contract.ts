// The API contract: openapi.yaml loaded once, its component schemas compiled by ajv on demand, its generated types and shared constants.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

/** The contract's types, generated from openapi.yaml: the server writes these shapes and the CLI reads them. */
export type { components, operations } from './http/openapi-types.ts';

/** The project every request belongs to while the server has no API keys (and the one the demo's key is for). */
export const DEFAULT_PROJECT = 'default';

export const openapiPath = fileURLToPath(new URL('../openapi.yaml', import.meta.url));

export const openapi = parse(readFileSync(openapiPath, 'utf8')) as {
  paths: Record<string, Record<string, any>>;
  components: { schemas: Record<string, any> };
};

// One ajv instance holds the whole document, so `$ref: '#/components/schemas/X'` resolves anywhere.
export const ajv = new Ajv2020.default({ allErrors: true, strict: false, coerceTypes: false });
addFormats.default(ajv);
ajv.addSchema({ ...openapi, $id: 'openapi' } as object, 'openapi');

const compiled = new Map<string, ValidateFunction>();

/** The compiled validator for `#/components/schemas/<name>`. */
export function componentValidator(name: string): ValidateFunction {
  let v = compiled.get(name);
  if (!v) {
    if (!openapi.components.schemas?.[name]) throw new Error(`openapi.yaml has no component schema '${name}'`);
    v = ajv.getSchema(`openapi#/components/schemas/${name}`);
    if (!v) throw new Error(`ajv could not compile component schema '${name}'`);
    compiled.set(name, v);
  }
  return v;
}
