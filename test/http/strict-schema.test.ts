// OpenAI's strict-mode JSON Schema subset: what passes (as zod and pydantic write schemas) and the 400 each violation gets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../../src/http/errors.ts';
import { checkRefs, checkStrictSchema } from '../../src/http/strict-schema.ts';

const source = { what: "response_format 'r'", param: 'response_format.json_schema.schema' };
const obj = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ type: 'object', properties, required: Object.keys(properties), additionalProperties: false, ...extra });

function rejects(schema: Record<string, unknown>, message: RegExp): void {
  assert.throws(() => checkStrictSchema(schema, source), (e: unknown) => e instanceof ApiError && e.status === 400 && e.param === source.param && e.code === 'invalid_json_schema' && message.test(e.message), JSON.stringify(schema));
}

test('schemas in the subset pass: nested objects, type lists, anyOf, enums, recursion through $defs, string and number keywords', () => {
  const node = obj({ value: { type: 'integer', minimum: 0, exclusiveMaximum: 100 }, children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 4 } });
  checkStrictSchema(
    obj(
      {
        name: { type: 'string', pattern: '^[A-Z]', description: 'a name' },
        when: { type: 'string', format: 'date-time' },
        nick: { type: ['string', 'null'] },
        kind: { enum: ['a', 'b'] },
        fixed: { const: 1 },
        either: { anyOf: [obj({ a: { type: 'boolean' } }), { type: 'null' }] },
        tree: { $ref: '#/$defs/node' },
        self: { anyOf: [{ $ref: '#' }, { type: 'null' }] },
      },
      { $schema: 'http://json-schema.org/draft-07/schema#', title: 'T', $defs: { node } },
    ),
    source,
  );
  checkStrictSchema({ type: 'object', properties: {}, required: [], additionalProperties: false }, source);
});

test('each violation names the keyword and where it is', () => {
  rejects({ type: 'array', items: { type: 'string' } }, /In context=\(\), the root must be an object schema/);
  rejects(obj({ a: { type: 'string', minLength: 1 } }), /context=\('properties', 'a'\), 'minLength' is not permitted\./);
  rejects(obj({ a: { type: 'string', minimum: 1 } }), /'minimum' is not permitted with type "string"/);
  rejects(obj({ a: { type: 'integer', multipleOf: 5 } }), /'multipleOf' is not supported by this server/);
  rejects(obj({ a: { type: 'number', maximum: 2.5 } }), /bounds on 'number' are not supported/);
  rejects(obj({ a: { type: 'object', properties: { b: { type: 'string' } }, required: ['b'] } }), /context=\('properties', 'a'\), 'additionalProperties' is required to be supplied and to be false/);
  rejects(obj({ a: { type: 'string' } }, { required: [] }), /'required' is required .* Missing 'a'/);
  rejects(obj({ a: { type: 'date' } }), /context=\('properties', 'a', 'type'\), "date" is not a supported type/);
  rejects(obj({ a: { type: 'string', format: 'uri' } }), /'format' "uri" is not supported/);
  rejects(obj({ a: { allOf: [{ type: 'string' }] } }), /'allOf' is not permitted\./);
  rejects(obj({ a: { type: 'object', patternProperties: {}, additionalProperties: false } }), /'patternProperties' is not permitted/);
  rejects(obj({ a: { type: 'array', items: { type: 'string' }, uniqueItems: true } }), /'uniqueItems' is not permitted/);
  rejects(obj({ a: { $ref: '#/$defs/missing' } }), /context=\('properties', 'a'\), '\$ref' '#\/\$defs\/missing' does not point into this schema/);
  rejects(obj({ a: { $ref: 'https://example.com/s.json' } }), /only local references/);
  rejects(obj({}, { $defs: { d: { type: 'object', properties: { x: { type: 'string' } }, required: ['x'] } } }), /context=\('\$defs', 'd'\), 'additionalProperties'/);
  let deep: Record<string, unknown> = { type: 'string' };
  for (let i = 0; i < 11; i++) deep = obj({ d: deep });
  rejects(deep, /nest at most 10 levels/);
});

test('non-strict schemas are only checked for references the grammar engine could not follow', () => {
  checkRefs({ type: 'object', properties: { a: { type: 'string', minLength: 2 }, $ref: { type: 'string' } }, allOf: [{ $ref: '#/properties/a' }] }, source);
  assert.throws(() => checkRefs({ type: 'object', properties: { a: { not: { $ref: '#/definitions/x' } } } }, source), /context=\('properties', 'a', 'not'\), '\$ref'/);
});
