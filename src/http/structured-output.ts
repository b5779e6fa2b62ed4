// Structured outputs of a chat request: response_format (json_schema, json_object) and tool_choice (required, a named function) as the grammar the reply must follow.
import type { ToolCallFormat } from '../engine/models/reply-format.ts';
import { GrammarError, type CallsGrammar, type GrammarEngine, type JsonGrammar, type ReplyGrammar } from '../engine/serve/grammar/grammar-engine.ts';
import type { CompiledGrammar } from '../engine/serve/grammar/xgrammar.ts';
import { badRequest } from './errors.ts';
import { checkRefs, checkStrictSchema, type SchemaSource } from './strict-schema.ts';
import type { BodyOf } from './validation.ts';

type ChatRequest = BodyOf<'createChatCompletion'>;
/** The request fields structured outputs read (tools and tool_choice as chat-reply.ts reads them, legacy functions included). */
export type StructuredRequest = Pick<ChatRequest, 'response_format' | 'tools' | 'tool_choice' | 'parallel_tool_calls'>;
type Schema = Record<string, unknown>;

/** JSON mode, and a non-strict schema or function without one: any JSON object. */
const ANY_OBJECT: Schema = { type: 'object' };
/** A strict function declared without parameters takes none. */
const NO_PARAMETERS: Schema = { type: 'object', properties: {}, required: [], additionalProperties: false };

/**
 * A schema as the grammar engine gets it: strict ones checked against OpenAI's strict subset (a 400 naming the
 * keyword), others only for references the engine could not follow (then compiled leniently: unlisted properties allowed).
 */
function jsonGrammar(schema: Schema | undefined, strict: boolean, source: SchemaSource): JsonGrammar {
  if (strict) checkStrictSchema(schema ?? {}, source);
  else if (schema) checkRefs(schema, source);
  return { schema: schema ?? ANY_OBJECT, strict };
}

/** The function tools of a request with their index in `tools` (for error params). */
function functionTools(tools: ChatRequest['tools']) {
  return (tools ?? []).flatMap((t, index) => (t.type === 'function' && t.function ? [{ index, fn: t.function }] : []));
}

function toolParameters(tool: ReturnType<typeof functionTools>[number]): JsonGrammar {
  const strict = tool.fn.strict === true;
  const source = { what: `function '${tool.fn.name}'`, param: `tools[${tool.index}].function.parameters` };
  return jsonGrammar((tool.fn.parameters as Schema | undefined) ?? (strict ? NO_PARAMETERS : undefined), strict, source);
}

/** What response_format asks the content to be, or null for free text. */
function responseFormatGrammar(format: ChatRequest['response_format']): JsonGrammar | null {
  if (!format || format.type === 'text') return null;
  if (format.type === 'json_object') return { schema: ANY_OBJECT, strict: false };
  const spec = format.json_schema;
  if (!spec) throw badRequest("Missing required parameter: 'response_format.json_schema'.", 'response_format.json_schema', 'missing_required_parameter');
  return jsonGrammar(spec.schema as Schema | undefined, spec.strict === true, { what: `response_format '${spec.name}'`, param: 'response_format.json_schema.schema' });
}

/**
 * The grammar a request's reply must follow, or null when it is free: calls when tool_choice is 'required' or names a
 * function; else the response_format JSON, or (tools on offer, tool_choice auto) that JSON or calls; else, with a
 * strict tool on offer, free text whose calls follow the grammar once they start (as the hosted API holds strict
 * tools to their schemas). Every strict tool's schema is checked, whatever tool_choice says.
 */
export function replyGrammarOf(body: StructuredRequest, format: ToolCallFormat): ReplyGrammar | null {
  const tools = functionTools(body.tools).map((t) => ({ name: t.fn.name, strict: t.fn.strict === true, parameters: toolParameters(t) }));
  const callsTo = (chosen: typeof tools): CallsGrammar => ({
    format,
    tools: chosen.map(({ name, parameters }) => ({ name, parameters })),
    parallel: body.parallel_tool_calls !== false && format.parallel,
  });
  const choice = body.tool_choice;
  if (choice === 'required' || typeof choice === 'object') {
    if (tools.length === 0) throw badRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", 'tool_choice');
    const chosen = choice === 'required' ? tools : tools.filter((t) => t.name === choice.function.name);
    if (chosen.length === 0) throw badRequest(`Invalid value for 'tool_choice': no function named '${(choice as Exclude<typeof choice, string>).function.name}' in 'tools'.`, 'tool_choice.function.name');
    return { calls: callsTo(chosen) };
  }
  const offered = tools.length > 0 && choice !== 'none';
  const json = responseFormatGrammar(body.response_format);
  if (json) return offered ? { json, calls: callsTo(tools) } : { json };
  if (offered && tools.some((t) => t.strict)) return { calls: callsTo(tools), textAround: true };
  return null;
}

/** Compiles (or finds cached) a reply grammar; a schema the engine rejects is a 400 naming it. */
export async function compileReplyGrammar(engine: GrammarEngine, grammar: ReplyGrammar, tools: ChatRequest['tools']): Promise<CompiledGrammar> {
  try {
    return await engine.compile(grammar);
  } catch (err) {
    if (!(err instanceof GrammarError)) throw err;
    const param = err.part === 'json' ? 'response_format.json_schema.schema' : `tools[${functionTools(tools).find((t) => t.fn.name === (err.part as { tool: string }).tool)?.index ?? 0}].function.parameters`;
    throw badRequest(`Invalid schema at '${param}': ${err.message}.`, param, 'invalid_json_schema');
  }
}
