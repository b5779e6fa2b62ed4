// A chat choice's reply as it is generated: text parsed into reasoning, content and tool calls, sent as stream deltas or assembled into the message; and a request's tools, the deprecated functions/function_call read as tools.
import { promptOpensThink, type ReplyFormat } from '../engine/models/reply-format.ts';
import type { FinishReason } from '../engine/serve/scheduler.ts';
import { badRequest } from './errors.ts';
import { createReplyParser, functionToolNames, type ReplyPart } from './reply-parser.ts';
import type { BodyOf } from './validation.ts';

type ChatRequest = BodyOf<'createChatCompletion'>;

/** What a request allows the model to call, and how the answer names calls. */
export interface ToolUse {
  /** Tool definitions for the template. */
  tools: NonNullable<ChatRequest['tools']> | undefined;
  /** tool_choice, or the deprecated function_call in its terms. */
  toolChoice: ChatRequest['tool_choice'] | { type: 'function'; function: { name: string } };
  /** Functions whose calls are parsed (none with tool_choice "none"). */
  names: Set<string>;
  maxCalls: number;
  /** The request used `functions`: the reply carries `function_call` (one call), as the hosted API answers such requests. */
  legacy: boolean;
}

/** Reads tools and tool_choice, mapping the deprecated `functions` / `function_call` onto them. */
export function toolUseOf(body: ChatRequest): ToolUse {
  if (body.functions && body.tools) throw badRequest("Send either 'tools' or the deprecated 'functions', not both.", 'functions');
  if (body.function_call !== undefined && !body.functions) throw badRequest("'function_call' chooses among 'functions', which this request does not have; with 'tools', use 'tool_choice'.", 'function_call');
  const legacy = body.functions !== undefined;
  const tools = legacy ? body.functions!.map((f) => ({ type: 'function' as const, function: f })) : body.tools;
  const call = body.function_call;
  const toolChoice: ToolUse['toolChoice'] = !legacy ? body.tool_choice : typeof call === 'object' ? { type: 'function', function: { name: call.name } } : call;
  return {
    tools,
    toolChoice,
    names: toolChoice === 'none' ? new Set() : functionToolNames(tools),
    maxCalls: legacy || body.parallel_tool_calls === false ? 1 : Infinity,
    legacy,
  };
}

/** One `delta` of a chat.completion.chunk. */
export type ChatDelta = Record<string, unknown>;

export interface ChoiceReply {
  /** Takes generated text with how many tokens it took; returns the deltas that became final. */
  push(text: string, tokens: number): ChatDelta[];
  /** Generation ended: the deltas held back until now. */
  end(): ChatDelta[];
  /** The assembled message (after end()). */
  message(): Record<string, unknown>;
  /** The API's finish_reason: a reply that made calls finished for them unless it ran out of tokens. */
  finishReason(generation: FinishReason): string;
  /** Generated tokens of the think block. */
  readonly reasoningTokens: number;
}

export function createChoiceReply(format: ReplyFormat, prompt: string, tools: ToolUse): ChoiceReply {
  const parser = createReplyParser({ format, toolNames: tools.names, maxCalls: tools.maxCalls, startsInThink: promptOpensThink(format, prompt) });
  let reasoning = '';
  let content = '';
  const calls: { id: string; type: 'function'; function: { name: string; arguments: string } }[] = [];
  let reasoningTokens = 0;

  function deltasOf(parts: ReplyPart[]): ChatDelta[] {
    return parts.map((p) => {
      switch (p.type) {
        case 'reasoning':
          reasoning += p.text;
          return { reasoning_content: p.text };
        case 'content':
          content += p.text;
          return { content: p.text };
        case 'call':
          calls.push({ id: p.id, type: 'function', function: { name: p.name, arguments: '' } });
          return tools.legacy
            ? { function_call: { name: p.name, arguments: '' } }
            : { tool_calls: [{ index: p.index, id: p.id, type: 'function', function: { name: p.name, arguments: '' } }] };
        case 'arguments':
          calls[p.index].function.arguments += p.text;
          return tools.legacy ? { function_call: { arguments: p.text } } : { tool_calls: [{ index: p.index, function: { arguments: p.text } }] };
      }
    });
  }

  return {
    push(text, tokens) {
      const wasThinking = parser.thinking;
      const deltas = deltasOf(parser.push(text));
      if (wasThinking || parser.thinking) reasoningTokens += tokens;
      return deltas;
    },
    end: () => deltasOf(parser.end()),
    message() {
      const calling = calls.length > 0;
      return {
        role: 'assistant',
        content: calling && content === '' ? null : content,
        refusal: null,
        ...(format.think ? { reasoning_content: reasoning === '' ? null : reasoning } : {}),
        ...(calling ? (tools.legacy ? { function_call: calls[0].function } : { tool_calls: calls }) : {}),
        annotations: [],
      };
    },
    finishReason: (generation) => (calls.length > 0 && generation === 'stop' ? (tools.legacy ? 'function_call' : 'tool_calls') : generation),
    get reasoningTokens() {
      return reasoningTokens;
    },
  };
}
