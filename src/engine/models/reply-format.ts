// What a model's chat template makes its replies look like: how it writes tool calls (one table, by template family) and whether it thinks in a <think> block first.

export type ToolCallFamily = 'hermes' | 'llama3' | 'mistral';

/**
 * How one family writes a reply that calls tools: `open`, then each call as `callOpen` + a JSON object
 * `{"name": <function name>, <argumentsKey>: <arguments object>}` + `callClose`, calls joined by `separator`, then `close`.
 * That sequence is what a grammar for "the reply must be calls" (tool_choice required / named) produces; parsing is
 * lenient about the text between the JSON objects, and starts at a `trigger` (or, for `bareJson`, at a `{` opening the reply).
 */
export interface ToolCallFormat {
  family: ToolCallFamily;
  open: string;
  callOpen: string;
  callClose: string;
  separator: string;
  close: string;
  /** The key the template writes the arguments under (parsing accepts `arguments` and `parameters` alike). */
  argumentsKey: 'arguments' | 'parameters';
  /** Text that starts the calls wherever it appears in a reply. */
  triggers: string[];
  /** Calls may also be bare JSON opening the reply, with no trigger (Llama 3.x's custom-tool calls). */
  bareJson: boolean;
  /** Whether a reply may hold several calls (Llama 3.1/3.2 templates take one per turn). */
  parallel: boolean;
  /** Alphanumerics in a call id this family's template accepts back in history (Mistral's insists on exactly 9), and its prefix. */
  callId: { prefix: string; length: number };
}

/** The family → format table. Sources: each family's published chat template (fixtures in test/fixtures/chat-templates). */
export const TOOL_CALL_FORMATS: Record<ToolCallFamily, ToolCallFormat> = {
  // Qwen2.5/Qwen3, Hermes 2 Pro/3, and the built-in ChatML default: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`.
  hermes: {
    family: 'hermes',
    open: '',
    callOpen: '<tool_call>\n',
    callClose: '\n</tool_call>',
    separator: '\n',
    close: '',
    argumentsKey: 'arguments',
    triggers: ['<tool_call>'],
    bareJson: false,
    parallel: true,
    callId: { prefix: 'call_', length: 24 },
  },
  // Llama 3.1/3.2/3.3: `{"name": …, "parameters": {…}}` as the whole reply, sometimes after `<|python_tag|>`; vLLM's llama3_json parser joins several with "; ".
  llama3: {
    family: 'llama3',
    open: '',
    callOpen: '',
    callClose: '',
    separator: '; ',
    close: '',
    argumentsKey: 'parameters',
    triggers: ['<|python_tag|>'],
    bareJson: true,
    parallel: false,
    callId: { prefix: 'call_', length: 24 },
  },
  // Mistral 7B v0.3 / Nemo / Small (v3 tokenizer): `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`.
  mistral: {
    family: 'mistral',
    open: '[TOOL_CALLS][',
    callOpen: '',
    callClose: '',
    separator: ', ',
    close: ']',
    argumentsKey: 'arguments',
    triggers: ['[TOOL_CALLS]'],
    bareJson: false,
    parallel: true,
    callId: { prefix: '', length: 9 },
  },
};

/** A think block a template opens replies with (Qwen3, QwQ, DeepSeek-R1 distills). */
export interface ThinkTags {
  open: string;
  close: string;
}

export interface ReplyFormat {
  toolCalls: ToolCallFormat;
  /** Null when the template has no think block. */
  think: ThinkTags | null;
}

/**
 * Reads the reply format off a template's source: the family whose call markup it writes (Hermes when it writes none,
 * which is also what the built-in default template writes), and `<think>` tags when it mentions them.
 */
export function replyFormatOf(templateSource: string): ReplyFormat {
  const family: ToolCallFamily = templateSource.includes('[TOOL_CALLS]')
    ? 'mistral'
    : templateSource.includes('<tool_call>')
      ? 'hermes'
      : templateSource.includes('<|python_tag|>') || (templateSource.includes('<|start_header_id|>') && templateSource.includes('"parameters"'))
        ? 'llama3'
        : 'hermes';
  return { toolCalls: TOOL_CALL_FORMATS[family], think: templateSource.includes('<think>') ? { open: '<think>', close: '</think>' } : null };
}

/** Marker texts the reply parser reads: they must survive decoding even where the tokenizer calls them special tokens. */
export function replyMarkers(format: ReplyFormat): string[] {
  return [...format.toolCalls.triggers, ...(format.think ? [format.think.open, format.think.close] : [])];
}

/** Whether a rendered prompt leaves the reply inside an open think block (DeepSeek-R1 distills end the prompt with `<think>\n`). */
export function promptOpensThink(format: ReplyFormat, prompt: string): boolean {
  if (!format.think) return false;
  const tail = prompt.trimEnd();
  return tail.endsWith(format.think.open);
}
