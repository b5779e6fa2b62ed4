// Request validation from openapi.yaml: a route names its operationId and gets its query and body checked before the handler.
import type { RequestHandler, Request } from 'express';
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { openapi, ajv as exact } from '../contract.ts';
import { badRequest } from './errors.ts';
import type { operations } from './openapi-types.ts';

export type OperationId = keyof operations;

/** The validated, coerced query string of an operation (defaults from openapi.yaml filled in). */
export type QueryOf<Op extends OperationId> = operations[Op] extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;

/** The validated JSON (or multipart field) body of an operation. */
export type BodyOf<Op extends OperationId> = operations[Op] extends { requestBody: { content: infer C } }
  ? C extends { 'application/json': infer B } ? B
  : C extends { 'multipart/form-data': infer M } ? M
  : never
  : never;

/**
 * Query strings and multipart fields arrive as text, so their validator coerces ("20" → 20) and fills
 * defaults; JSON bodies are checked as sent by the contract's own ajv. Both hold the whole document, so
 * component $refs resolve.
 */
const coercing = new Ajv2020.default({ allErrors: true, strict: false, coerceTypes: 'array', useDefaults: true });
addFormats.default(coercing);
coercing.addSchema({ ...openapi, $id: 'openapi' } as object, 'openapi');

interface OperationValidators {
  query: ValidateFunction;
  body?: ValidateFunction;
}

const byOperation = new Map<string, OperationValidators>();

/** Points local `#/components/...` refs at the registered document. */
function anchorRefs(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(anchorRefs);
  if (schema && typeof schema === 'object') {
    return Object.fromEntries(Object.entries(schema).map(([k, v]) =>
      [k, k === '$ref' && typeof v === 'string' && v.startsWith('#/') ? `openapi${v}` : anchorRefs(v)]));
  }
  return schema;
}

/** Multipart file parts are handled by multer, not ajv: drop binary properties from the field schema. */
function withoutFileParts(schemaOrRef: any): any {
  const ref = typeof schemaOrRef.$ref === 'string' ? /^#\/components\/schemas\/(.+)$/.exec(schemaOrRef.$ref) : null;
  const schema = ref ? openapi.components.schemas[ref[1]!] : schemaOrRef;
  const properties = Object.fromEntries(Object.entries(schema.properties ?? {}).filter(([, p]: [string, any]) => p.format !== 'binary'));
  const required = (schema.required ?? []).filter((name: string) => name in properties);
  return { ...schema, properties, required };
}

function findOperation(operationId: string): { parameters: any[]; requestBody?: any } {
  for (const pathItem of Object.values(openapi.paths)) {
    for (const [method, op] of Object.entries(pathItem)) {
      if (method === 'parameters' || op?.operationId !== operationId) continue;
      return { parameters: [...(pathItem.parameters ?? []), ...(op.parameters ?? [])], requestBody: op.requestBody };
    }
  }
  throw new Error(`openapi.yaml has no operation '${operationId}'`);
}

function compileOperation(operationId: string): OperationValidators {
  const op = findOperation(operationId);
  const queryParams = op.parameters.filter((p) => p.in === 'query');
  const query = coercing.compile(anchorRefs({
    type: 'object',
    properties: Object.fromEntries(queryParams.map((p) => [p.name, p.schema ?? {}])),
    required: queryParams.filter((p) => p.required).map((p) => p.name),
    additionalProperties: false,
  }) as object);
  const content = op.requestBody?.content ?? {};
  if (content['application/json']) {
    return { query, body: exact.compile(anchorRefs(content['application/json'].schema) as object) };
  }
  if (content['multipart/form-data']) {
    const fields = withoutFileParts(content['multipart/form-data'].schema);
    return { query, body: coercing.compile(anchorRefs(fields) as object) };
  }
  return { query };
}

/** `/messages/0/role` → `messages[0].role`, the way the hosted API names nested params. */
function paramName(path: string): string {
  return path.split('/').filter(Boolean).reduce((acc, seg) => (/^\d+$/.test(seg) ? `${acc}[${seg}]` : acc ? `${acc}.${seg}` : seg), '');
}

function join(base: string, child: string): string {
  return base ? `${base}.${child}` : child;
}

/**
 * The error that explains the first failure best. For an anyOf/oneOf ("auto" or a number ≥ 1) ajv lists every
 * branch's errors: a branch the value's type fits says what is wrong (`must be >= 1`); when none fits, the
 * branches' types are listed (`must be string or integer`).
 */
function explaining(errors: ErrorObject[]): ErrorObject {
  const first = errors[0]!;
  const here = errors.filter((e) => e.instancePath === first.instancePath);
  const isUnion = (e: ErrorObject) => e.keyword === 'anyOf' || e.keyword === 'oneOf';
  if (!here.some(isUnion)) return first;
  const branches = here.filter((e) => !isUnion(e));
  // A branch is its schema path up to the last union index ('…/anyOf/1/minimum' → '…/anyOf/1').
  const branchOf = (e: ErrorObject) => /^(.*\/(?:anyOf|oneOf)\/\d+)\//.exec(e.schemaPath)?.[1] ?? e.schemaPath;
  const mistyped = new Set(branches.filter((e) => e.keyword === 'type').map(branchOf));
  const fitting = branches.find((e) => !mistyped.has(branchOf(e)));
  if (fitting) return fitting;
  const types = [...new Set(branches.filter((e) => e.keyword === 'type').flatMap((e) => [(e.params as { type: string | string[] }).type].flat()))];
  return { ...first, message: `must be ${types.join(' or ')}` };
}

/** The ajv errors as a 400 that names the offending parameter. */
function toBadRequest(errors: ErrorObject[], where: 'query' | 'body'): Error {
  const e = explaining(errors);
  const at = paramName(e.instancePath);
  if (e.keyword === 'additionalProperties') {
    const param = join(at, (e.params as { additionalProperty: string }).additionalProperty);
    return badRequest(`Unrecognized request argument supplied: ${param}`, param, 'unknown_parameter');
  }
  if (e.keyword === 'required') {
    const param = join(at, (e.params as { missingProperty: string }).missingProperty);
    return badRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
  }
  if (!at) return badRequest(`Invalid ${where === 'query' ? 'query string' : 'request body'}: ${e.message}.`, null, 'invalid_type');
  const allowed = e.keyword === 'enum' ? ` (one of: ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})` : '';
  return badRequest(`Invalid value for '${at}': ${e.message}${allowed}.`, at, 'invalid_value');
}

/**
 * Middleware for one openapi.yaml operation. Checks the query string (coerced, defaults applied) into
 * `req.validQuery`, and the JSON or multipart-field body in place in `req.body`. Mount it after multer
 * on multipart routes. Throws at start-up if the operationId is not in the contract.
 */
export function validate(operationId: OperationId): RequestHandler {
  let v = byOperation.get(operationId);
  if (!v) {
    v = compileOperation(operationId);
    byOperation.set(operationId, v);
  }
  const validators = v;
  return (req, _res, next) => {
    const query = structuredClone(req.query ?? {}) as Record<string, unknown>;
    if (!validators.query(query)) return next(toBadRequest(validators.query.errors ?? [], 'query'));
    req.validQuery = query;
    if (validators.body) {
      // Body-less POSTs (the Python SDK sends `Content-Type: application/json` with nothing) count as `{}`.
      const body = isEmptyBody(req) ? {} : req.body;
      if (!validators.body(body)) return next(toBadRequest(validators.body.errors ?? [], 'body'));
      req.body = body;
    }
    next();
  };
}

function isEmptyBody(req: Request): boolean {
  return req.body === undefined || req.body === null;
}
