// Tool calls in generated text, as ChatML/Hermes-style templates (the built-in default, Qwen) write them: `<tool_call>{"name", "arguments"}</tool_call>` blocks.
import { randomAlnum } from '../store/ids.ts';

export interface ParsedToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

const BLOCK = /<tool_call>\s*([\s\S]*?)\s*<\/tool_call>/g;

/**
 * Splits a reply into its text before the first call and the calls. Returns null when the text holds no
 * well-formed call (then it is plain content); `arguments` is re-serialised JSON, as the API sends it.
 */
export function parseToolCalls(text: string, toolNames: ReadonlySet<string>): { content: string | null; calls: ParsedToolCall[] } | null {
  const calls: ParsedToolCall[] = [];
  for (const m of text.matchAll(BLOCK)) {
    let call: unknown;
    try {
      call = JSON.parse(m[1]);
    } catch {
      return null;
    }
    const { name, arguments: args } = (call ?? {}) as { name?: unknown; arguments?: unknown };
    if (typeof name !== 'string' || !toolNames.has(name)) return null;
    calls.push({ id: `call_${randomAlnum(24)}`, type: 'function', function: { name, arguments: typeof args === 'string' ? args : JSON.stringify(args ?? {}) } });
  }
  if (calls.length === 0) return null;
  const before = text.slice(0, text.indexOf('<tool_call>')).trim();
  return { content: before === '' ? null : before, calls };
}

/** Names of the function tools a request offers (calls to anything else stay plain text). */
export function functionToolNames(tools: { type: string; function?: { name: string } }[] | undefined): Set<string> {
  return new Set((tools ?? []).flatMap((t) => (t.type === 'function' && t.function ? [t.function.name] : [])));
}
