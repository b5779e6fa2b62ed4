// Chat templates: a model's Jinja chat_template rendered with @huggingface/jinja, and the ChatML default for models without one.
import { Template } from '@huggingface/jinja';

/**
 * The template used when a model ships none: ChatML (`<|im_start|>role\n…<|im_end|>\n`), with tools in the
 * Hermes/Qwen style: tool definitions listed in the system turn, calls as `<tool_call>{json}</tool_call>`
 * in the assistant turn, tool results as `<tool_response>` blocks in a user turn.
 */
export const DEFAULT_CHAT_TEMPLATE = `{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' or messages[0].role == 'developer' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' or messages[0].role == 'developer' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' or message.role == 'developer' %}
{%- if not loop.first %}{{- '<|im_start|>system\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\\n' }}
{%- if message.content %}{{- message.content }}{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}
{{- '<tool_call>\\n{"name": "' + tool_call.function.name + '", "arguments": ' + (tool_call.function.arguments | tojson) + '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}`;

/** A message as templates see it: OpenAI chat fields, with content already flattened to a string. */
export interface TemplateMessage {
  role: string;
  content?: string | null;
  name?: string;
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: unknown } }[];
  tool_call_id?: string;
  /** A past reply's reasoning (templates that render it, such as Qwen3's, read this). */
  reasoning_content?: string;
}

export interface RenderInput {
  messages: TemplateMessage[];
  /** OpenAI-style tool definitions `{type: "function", function: {name, description?, parameters?}}`. */
  tools?: unknown[];
  addGenerationPrompt?: boolean;
  /** Extra variables some templates read (e.g. `enable_thinking`). */
  extra?: Record<string, unknown>;
}

export interface ChatTemplate {
  source: string;
  render(input: RenderInput): string;
}

/** Compiles a template once; `source` null means the model has none and gets DEFAULT_CHAT_TEMPLATE. */
export function compileChatTemplate(source: string | null, tokens: { bosToken: string | null; eosToken: string | null }): ChatTemplate {
  const text = source ?? DEFAULT_CHAT_TEMPLATE;
  const template = new Template(text);
  return {
    source: text,
    render: ({ messages, tools, addGenerationPrompt = false, extra }) =>
      template.render({
        ...extra,
        messages,
        tools: tools && tools.length > 0 ? tools : undefined,
        add_generation_prompt: addGenerationPrompt,
        bos_token: tokens.bosToken ?? '',
        eos_token: tokens.eosToken ?? '',
      }),
  };
}

/** An OpenAI content value (string, null or text parts) as the single string templates expect. */
export function flattenContent(content: unknown): string | null {
  if (content === null || content === undefined) return null;
  if (typeof content === 'string') return content;
  return (content as { text: string }[]).map((p) => p.text).join('');
}

/**
 * OpenAI messages → template messages: text parts joined, a missing content (assistant tool calls) written as ''
 * (templates apply string operations to it), and tool-call arguments parsed from their JSON string into an object
 * (Hugging Face templates expect a mapping and serialize it themselves).
 */
export function toTemplateMessages(messages: Record<string, any>[]): TemplateMessage[] {
  return messages.map((m) => {
    const out: TemplateMessage = { role: m.role, content: flattenContent(m.content) ?? '' };
    if (m.name !== undefined) out.name = m.name;
    if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
    if (typeof m.reasoning_content === 'string') out.reasoning_content = m.reasoning_content;
    const calls = m.tool_calls ?? (m.function_call ? [{ id: 'call_0', type: 'function', function: m.function_call }] : undefined);
    if (calls) {
      out.tool_calls = calls.map((c: { id: string; function: { name: string; arguments: string } }) => ({
        id: c.id,
        type: 'function' as const,
        function: { name: c.function.name, arguments: parseArguments(c.function.arguments) },
      }));
    }
    if (m.role === 'function') out.role = 'tool';
    return out;
  });
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
