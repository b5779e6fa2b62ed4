// Training-file validation: every line checked against the contract's line schemas and the hosted service's rules.
import type { ErrorObject } from 'ajv';
import { componentValidator } from '../contract.ts';
import { readJsonl, type JsonlReaderOptions } from './jsonl-reader.ts';

export type TrainingFormat = 'chat' | 'preference';
export type TrainingFileParam = 'training_file' | 'validation_file';

/** One class of problem found in a file: its code, what it means, the first few line numbers and how many lines have it. */
export interface LineProblem {
  code: string;
  description: string;
  lines: number[];
  count: number;
}

/** The error a job reports when a file is rejected (the shape of the job's `error`). */
export interface TrainingFileError {
  code: string;
  message: string;
  param: TrainingFileParam;
}

export type TrainingFileValidation =
  | { ok: true; format: TrainingFormat; examples: number }
  | { ok: false; error: TrainingFileError; problems: LineProblem[] };

export interface ValidateOptions extends JsonlReaderOptions {
  param: TrainingFileParam;
  /** The format the job's method needs (supervised → chat, dpo → preference); without it the first line decides. */
  expectedFormat?: TrainingFormat;
}

export const MIN_EXAMPLES = 10;
const LINES_SHOWN = 5;

/** Every problem class a line can have, with the sentence the error message uses for it. */
export const PROBLEM_DESCRIPTIONS: Record<string, string> = {
  invalid_utf8: 'the line is not valid UTF-8',
  invalid_json: 'the line is not valid JSON',
  data_type: 'the line is not a JSON object',
  line_too_long: 'the line is too long',
  mixed_formats: 'the line is in a different format from the rest of the file (one format per file)',
  not_chat_example: 'the line is a preference pair, but a supervised job trains on chat examples ({"messages": [...]}); DPO jobs (method.type "dpo") take preference pairs',
  not_preference_pair:
    'the line is a chat example, but a DPO job trains on preference pairs ({"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}); supervised jobs take chat examples',
  missing_messages_list: 'the example has no "messages" list, or it is empty',
  unrecognized_key: 'the example has a key that is not part of the format',
  message_missing_key: 'a message lacks a required key',
  message_unrecognized_key: 'a message has a key not allowed for its role',
  unrecognized_role: 'a message has an unrecognized role',
  missing_content: 'a message has no content',
  invalid_content: 'a message content is not a string or a list of text parts (images are not supported)',
  invalid_weight: 'a weight is not 0 or 1, or is set on a message that is not from the assistant',
  example_missing_assistant_message: 'the example has no assistant message to learn from (none, or all have weight 0)',
  invalid_tool_call: 'an assistant tool call is malformed or its arguments are not a JSON string',
  tool_call_without_definition: 'an assistant calls a tool or function that the example does not define',
  tool_message_without_call: 'a tool message answers no earlier tool call id',
  invalid_tools: 'the "tools" or "functions" list is malformed',
  missing_preference_output: 'the example lacks preferred_output and non_preferred_output',
  invalid_preference_output: 'a preferred or non-preferred output is not exactly one assistant message',
  invalid_preference_input: 'the input messages are missing, or do not end with a user or tool message',
  invalid_format: 'the line does not match the format',
};

/**
 * Checks a whole training or validation file in one streaming pass.
 * Every problem class is reported with its first few line numbers and total count, in one error whose `param` is `options.param`.
 */
export async function validateTrainingFile(path: string, options: ValidateOptions): Promise<TrainingFileValidation> {
  const problems = new Map<string, LineProblem>();
  let format = options.expectedFormat;
  let examples = 0;
  for await (const line of readJsonl(path, options)) {
    let codes: string[];
    if ('problem' in line) codes = [line.problem];
    else {
      const lineFormat = detectFormat(line.value);
      format ??= lineFormat;
      if (lineFormat === format) codes = checkLine(line.value, format);
      // A file in the other method's format is named as such; otherwise the first line set the file's format.
      else if (options.expectedFormat) codes = [format === 'chat' ? 'not_chat_example' : 'not_preference_pair'];
      else codes = ['mixed_formats'];
    }
    if (codes.length === 0) examples++;
    for (const code of codes) {
      let p = problems.get(code);
      if (!p) problems.set(code, (p = { code, description: PROBLEM_DESCRIPTIONS[code] ?? code, lines: [], count: 0 }));
      if (p.lines.length < LINES_SHOWN) p.lines.push(line.lineNumber);
      p.count++;
    }
  }
  const fileName = options.param === 'training_file' ? 'Training file' : 'Validation file';
  if (problems.size > 0) {
    const list = [...problems.values()];
    const details = list.map(
      (p) => `${p.code}: ${p.description} (line${p.count > 1 ? 's' : ''} ${p.lines.join(', ')}${p.count > p.lines.length ? ', …' : ''}; ${p.count} in total)`,
    );
    return {
      ok: false,
      problems: list,
      error: {
        code: options.param === 'training_file' ? 'invalid_training_file' : 'invalid_validation_file',
        message: `${fileName} has invalid lines. ${details.join('. ')}.`,
        param: options.param,
      },
    };
  }
  if (examples < MIN_EXAMPLES) {
    return {
      ok: false,
      problems: [],
      error: {
        code: 'invalid_n_examples',
        message: `${fileName} has ${examples} example(s), but must have at least ${MIN_EXAMPLES} examples`,
        param: options.param,
      },
    };
  }
  return { ok: true, format: format ?? 'chat', examples };
}

const PREFERENCE_KEYS = ['input', 'preferred_output', 'non_preferred_output', 'preferred_completion', 'non_preferred_completion'];

/** A line is a preference example when it has any preference key; otherwise it is read as a chat example. */
export function detectFormat(line: Record<string, unknown>): TrainingFormat {
  return PREFERENCE_KEYS.some((k) => k in line) ? 'preference' : 'chat';
}

/** The problem codes of one parsed line in the given format; empty when the line is a valid example. */
export function checkLine(line: Record<string, unknown>, format: TrainingFormat): string[] {
  return format === 'chat' ? checkChatLine(line) : checkPreferenceLine(line);
}

type Message = Record<string, any>;
type Tool = { type: string; function: { name: string } };

function checkChatLine(line: Record<string, unknown>): string[] {
  const validate = componentValidator('TrainingChatLine');
  if (!validate(line)) return classifySchemaErrors(validate.errors ?? []);
  const codes = new Set<string>();
  const messages = line.messages as Message[];
  checkMessages(messages, codes);
  checkToolUse(messages, (line.tools as Tool[] | undefined) ?? [], (line.functions as { name: string }[] | undefined) ?? [], codes);
  const learnable = messages.some((m) => m.role === 'assistant' && m.weight !== 0);
  if (!learnable) codes.add('example_missing_assistant_message');
  return [...codes];
}

function checkPreferenceLine(line: Record<string, unknown>): string[] {
  const validate = componentValidator('TrainingPreferenceLine');
  if (!validate(line)) return classifySchemaErrors(validate.errors ?? []);
  const codes = new Set<string>();
  const input = line.input as { messages: Message[]; tools?: Tool[] };
  checkMessages(input.messages, codes);
  const last = input.messages[input.messages.length - 1]!;
  if (last.role !== 'user' && last.role !== 'tool') codes.add('invalid_preference_input');
  const hasOutput = 'preferred_output' in line && 'non_preferred_output' in line;
  const hasCompletion = 'preferred_completion' in line && 'non_preferred_completion' in line;
  if (hasOutput === hasCompletion) {
    codes.add(hasOutput ? 'unrecognized_key' : 'missing_preference_output');
    return [...codes];
  }
  const outputs = (hasOutput ? [line.preferred_output, line.non_preferred_output] : [line.preferred_completion, line.non_preferred_completion]) as Message[][];
  for (const [output] of outputs) {
    if (output!.role !== 'assistant' || output!.weight === 0) codes.add('invalid_preference_output');
    else {
      checkMessages([output!], codes);
      checkToolUse([...input.messages, output!], input.tools ?? [], [], codes);
    }
  }
  return [...codes];
}

/** Content rules the schema cannot say simply: non-assistant messages need text; assistants need text or a call. */
function checkMessages(messages: Message[], codes: Set<string>): void {
  for (const m of messages) {
    const hasCall = m.tool_calls !== undefined || m.function_call !== undefined;
    if (m.content === null || m.content === undefined) {
      if (m.role !== 'assistant' || !hasCall) codes.add('missing_content');
    } else if (Array.isArray(m.content) && m.content.every((p: { text: string }) => p.text === '')) {
      codes.add('missing_content');
    }
  }
}

/** Every call names a defined tool, its arguments are a JSON string, and every tool message answers an earlier call. */
function checkToolUse(messages: Message[], tools: Tool[], functions: { name: string }[], codes: Set<string>): void {
  const toolNames = new Set(tools.map((t) => t.function.name));
  const functionNames = new Set(functions.map((f) => f.name));
  const callIds = new Set<string>();
  for (const m of messages) {
    for (const call of (m.tool_calls ?? []) as { id: string; function: { name: string; arguments: string } }[]) {
      callIds.add(call.id);
      if (!toolNames.has(call.function.name)) codes.add('tool_call_without_definition');
      if (!isJsonText(call.function.arguments)) codes.add('invalid_tool_call');
    }
    if (m.function_call) {
      if (!functionNames.has(m.function_call.name) && !toolNames.has(m.function_call.name)) codes.add('tool_call_without_definition');
      if (!isJsonText(m.function_call.arguments)) codes.add('invalid_tool_call');
    }
    if (m.role === 'tool' && !callIds.has(m.tool_call_id)) codes.add('tool_message_without_call');
  }
}

function isJsonText(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Maps ajv errors to problem classes by where they point; `if` and `anyOf` wrappers only repeat their inner errors. */
function classifySchemaErrors(errors: ErrorObject[]): string[] {
  const codes = new Set<string>();
  for (const e of errors) {
    if (e.keyword === 'if') continue;
    const path = e.instancePath.replace(/^\/input(?=\/messages|$)/, '');
    const param = e.params as Record<string, string>;
    let code: string | undefined;
    if (/^\/(preferred|non_preferred)_(output|completion)/.test(path)) code = 'invalid_preference_output';
    else if (path === '' && e.keyword === 'additionalProperties') code = 'unrecognized_key';
    else if (path === '' && e.keyword === 'required') code = param.missingProperty === 'messages' ? 'missing_messages_list' : 'invalid_preference_input';
    else if (path === '/messages') code = 'missing_messages_list';
    else if (/^\/(tools|functions)\b/.test(path)) code = 'invalid_tools';
    else if (/^\/messages\/\d+$/.test(path)) {
      if (e.keyword === 'propertyNames' || e.propertyName !== undefined) {
        code = (e.propertyName ?? param.propertyName) === 'weight' ? 'invalid_weight' : 'message_unrecognized_key';
      } else if (e.keyword === 'required') code = param.missingProperty === 'content' ? 'missing_content' : 'message_missing_key';
      else code = 'invalid_format';
    } else if (/^\/messages\/\d+\/role$/.test(path)) code = 'unrecognized_role';
    else if (/^\/messages\/\d+\/content$/.test(path)) code = e.keyword === 'minLength' ? 'missing_content' : 'invalid_content';
    else if (/^\/messages\/\d+\/content\//.test(path)) code = 'invalid_content';
    else if (/^\/messages\/\d+\/weight$/.test(path)) code = 'invalid_weight';
    else if (/^\/messages\/\d+\/(tool_calls|function_call)/.test(path)) code = 'invalid_tool_call';
    else if (e.keyword !== 'anyOf') code = 'invalid_format';
    if (code) codes.add(code);
  }
  // A content that is only empty (minLength) also fails the other anyOf branches; keep the precise class.
  if (codes.has('missing_content')) codes.delete('invalid_content');
  return [...codes];
}
