// The JSON Schema subset OpenAI's strict mode accepts (structured outputs, strict function tools): a schema outside it is a 400 naming the keyword and where it is.
import { badRequest, type ApiError } from './errors.ts';

type Schema = Record<string, unknown>;
type Path = (string | number)[];

const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null', 'object', 'array']);
const FORMATS = new Set(['date-time', 'time', 'date', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uuid']);
/** Keywords allowed on any schema, then those allowed where the schema's `type` includes the key's type. */
const COMMON = new Set(['type', 'description', 'title', 'enum', 'const', 'anyOf', '$ref', '$defs', 'definitions', '$schema', '$id']);
const BY_TYPE: Record<string, Set<string>> = {
  object: new Set(['properties', 'required', 'additionalProperties']),
  array: new Set(['items', 'minItems', 'maxItems']),
  string: new Set(['pattern', 'format']),
  integer: new Set(['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum']),
};
/** In the hosted subset, but not enforced correctly by the grammar engine (xgrammar 0.1.27): refused rather than broken. */
const NOT_ENFORCED: Record<string, string> = {
  multipleOf: "'multipleOf' is not supported by this server (its grammar engine cannot enforce it).",
  minimum: "bounds on 'number' are not supported by this server (its grammar engine enforces them only on 'integer').",
};
NOT_ENFORCED.maximum = NOT_ENFORCED.exclusiveMinimum = NOT_ENFORCED.exclusiveMaximum = NOT_ENFORCED.minimum;
/** The hosted API's limits on a strict schema. */
const MAX_DEPTH = 10;
const MAX_PROPERTIES = 5000;
const MAX_ENUM = 1000;

/** Where a schema comes from, for messages ("response_format 'person'", "function 'get_weather'") and the error's param. */
export interface SchemaSource {
  what: string;
  param: string;
}

const contextOf = (path: Path) => `(${path.map((p) => `'${p}'`).join(', ')}${path.length === 1 ? ',' : ''})`;

function invalid(source: SchemaSource, path: Path, problem: string): ApiError {
  return badRequest(`Invalid schema for ${source.what}: In context=${contextOf(path)}, ${problem}`, source.param, 'invalid_json_schema');
}

/** The schema a local `$ref` ('#' or a JSON pointer into the root) points at, or undefined. */
function resolveRef(root: Schema, ref: string): unknown {
  if (ref === '#') return root;
  if (!ref.startsWith('#/')) return undefined;
  let node: unknown = root;
  for (const raw of ref.slice(2).split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/**
 * Every `$ref` of a schema must point inside it (any mode): the grammar engine cannot fetch remote schemas, and an
 * unresolvable reference would fail it. Values of enum/const/default/examples are data, not schemas.
 */
export function checkRefs(root: Schema, source: SchemaSource): void {
  const visit = (node: unknown, path: Path): void => {
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach((item, i) => visit(item, [...path, i]));
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string' && path.at(-1) !== 'properties') {
        if (resolveRef(root, value) === undefined) throw invalid(source, path, `'$ref' '${value}' does not point into this schema (only local references such as '#/$defs/name' are supported).`);
      } else if (!['enum', 'const', 'default', 'examples'].includes(key)) visit(value, [...path, key]);
    }
  };
  visit(root, []);
}

/** Throws a 400 unless `root` is in OpenAI's strict-mode subset: an object at the root, closed objects listing every property as required, known keywords only. */
export function checkStrictSchema(root: Schema, source: SchemaSource): void {
  if (root.type !== 'object' || 'anyOf' in root) throw invalid(source, [], "the root must be an object schema ('type': 'object'), not 'anyOf' or another type.");
  let properties = 0;
  const visit = (node: unknown, path: Path, depth: number): void => {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) throw invalid(source, path, 'a schema must be a JSON object.');
    const schema = node as Schema;
    if (depth > MAX_DEPTH) throw invalid(source, path, `schemas may nest at most ${MAX_DEPTH} levels deep.`);
    const types = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
    for (const t of types) if (typeof t !== 'string' || !TYPES.has(t)) throw invalid(source, [...path, 'type'], `${JSON.stringify(t)} is not a supported type (string, number, integer, boolean, null, object, array).`);
    for (const key of Object.keys(schema)) {
      if (COMMON.has(key) || types.some((t) => BY_TYPE[t as string]?.has(key))) continue;
      if (key in NOT_ENFORCED && (key === 'multipleOf' || types.includes('number'))) throw invalid(source, path, NOT_ENFORCED[key]);
      throw invalid(source, path, `'${key}' is not permitted${Object.values(BY_TYPE).some((s) => s.has(key)) ? ` with type ${JSON.stringify(schema.type ?? null)}` : ''}.`);
    }
    if (typeof schema.format === 'string' && !FORMATS.has(schema.format)) throw invalid(source, path, `'format' ${JSON.stringify(schema.format)} is not supported (${[...FORMATS].join(', ')}).`);
    if (Array.isArray(schema.enum) && schema.enum.length > MAX_ENUM) throw invalid(source, path, `'enum' may list at most ${MAX_ENUM} values.`);
    if (types.includes('object')) {
      if (schema.additionalProperties !== false) throw invalid(source, path, "'additionalProperties' is required to be supplied and to be false.");
      const props = (schema.properties ?? {}) as Schema;
      const required = Array.isArray(schema.required) ? schema.required : [];
      const missing = Object.keys(props).filter((k) => !required.includes(k));
      if (missing.length > 0 || (schema.properties !== undefined && !Array.isArray(schema.required))) {
        throw invalid(source, path, `'required' is required to be supplied and to be an array including every key in properties. Missing '${missing[0]}'.`);
      }
      properties += Object.keys(props).length;
      if (properties > MAX_PROPERTIES) throw invalid(source, path, `a schema may have at most ${MAX_PROPERTIES} properties in all.`);
      for (const [name, sub] of Object.entries(props)) visit(sub, [...path, 'properties', name], depth + 1);
    }
    if (schema.items !== undefined) visit(schema.items, [...path, 'items'], depth + 1);
    if (schema.anyOf !== undefined) {
      if (!Array.isArray(schema.anyOf) || schema.anyOf.length === 0) throw invalid(source, path, "'anyOf' must be a non-empty array of schemas.");
      schema.anyOf.forEach((sub, i) => visit(sub, [...path, 'anyOf', i], depth + 1));
    }
    for (const defs of ['$defs', 'definitions'] as const) {
      for (const [name, sub] of Object.entries((schema[defs] ?? {}) as Schema)) visit(sub, [...path, defs, name], depth);
    }
  };
  visit(root, [], 0);
  checkRefs(root, source);
}
