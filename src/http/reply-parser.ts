// Generated text → the parts of a chat reply, incrementally: reasoning (the think block), content, and tool calls with their arguments in fragments; streamed deltas and whole messages are both built from these parts.
import type { ReplyFormat } from '../engine/models/reply-format.ts';
import { randomAlnum } from '../store/ids.ts';

export type ReplyPart =
  | { type: 'reasoning'; text: string }
  | { type: 'content'; text: string }
  | { type: 'call'; index: number; id: string; name: string }
  | { type: 'arguments'; index: number; text: string };

export interface ReplyParserOptions {
  format: ReplyFormat;
  /** Functions the request offers; calls to anything else stay text. Empty: no calls are parsed. */
  toolNames: ReadonlySet<string>;
  /** Calls kept at most (1 for parallel_tool_calls false and legacy function calling); later ones are dropped. */
  maxCalls: number;
  /** The prompt left the reply inside an open think block. */
  startsInThink: boolean;
}

export interface ReplyParser {
  /** Takes the next piece of generated text; returns the parts that became final (text that might be a marker is held). */
  push(text: string): ReplyPart[];
  /** The generation ended: returns what was held back (an unfinished call that was never recognised is content). */
  end(): ReplyPart[];
  /** Inside the think block now (the caller counts reasoning tokens by it). */
  readonly thinking: boolean;
  /** Calls recognised so far. */
  readonly calls: number;
}

/** The state of one call's top-level JSON object: which key is being read and where its value stands. */
interface CallScan {
  /** The object's '{' was read. */
  opened: boolean;
  phase: 'key' | 'colon' | 'value' | 'next';
  key: string;
  /** Raw text of the key or value being read. */
  raw: string;
  inString: boolean;
  escaped: boolean;
  /** Bracket depth inside the value being read. */
  depth: number;
  name: string | null;
  /** Arguments read before the name was known, or a string-valued arguments field, sent once complete. */
  pendingArguments: string;
  sentArguments: boolean;
}

const isSpace = (c: string) => c === ' ' || c === '\n' || c === '\t' || c === '\r';

/** Length of the longest suffix of `text` that is a proper prefix of one of `markers` (text that must wait for more). */
function partialMarkerLength(text: string, markers: readonly string[]): number {
  const longest = Math.max(0, ...markers.map((m) => m.length - 1));
  for (let n = Math.min(longest, text.length); n > 0; n--) {
    const tail = text.slice(text.length - n);
    if (markers.some((m) => m.startsWith(tail))) return n;
  }
  return 0;
}

/** What the end of `text` must wait for: a possible marker start, and the whitespace before it (trimmed if a marker follows). */
function heldBack(text: string, markers: readonly string[]): number {
  const partial = partialMarkerLength(text, markers);
  const rest = text.slice(0, text.length - partial);
  return partial + rest.length - rest.trimEnd().length;
}

export function createReplyParser(o: ReplyParserOptions): ReplyParser {
  const think = o.format.think;
  const callsOn = o.toolNames.size > 0 && o.maxCalls > 0;
  const triggers = callsOn ? o.format.toolCalls.triggers : [];
  const argumentKeys = new Set(['arguments', 'parameters']);
  // start: only whitespace so far (a think block or a bare-JSON call may open the reply); think; content; calls: between
  // call objects; object: inside one; plain: everything left is content (a call that was not one); done: calls ended.
  let mode: 'start' | 'think' | 'content' | 'calls' | 'object' | 'plain' | 'done' = o.startsInThink && think ? 'think' : 'start';
  let buffer = '';
  let thinkDone = mode === 'think';
  let reasoningSent = false;
  /** Raw text taken since content ended, given back as content if the first call turns out not to be one. */
  let held = '';
  let calls = 0;
  let scan: CallScan | null = null;
  let out: ReplyPart[] = [];

  const emit = (type: 'reasoning' | 'content', text: string) => {
    if (!text) return;
    out.push({ type, text });
    if (type === 'reasoning') reasoningSent = true;
  };

  /** The call being read ends: one whose arguments never came has "{}". */
  function closeCall(): void {
    if (scan && scan.name !== null && !scan.sentArguments) sendArguments(scan.pendingArguments || '{}');
    scan = null;
  }

  function endCalls(): void {
    closeCall();
    mode = 'done';
    buffer = '';
  }

  /** Text that is not a call: after calls it ends them; before any, all held text is content, and so is the rest of the reply. */
  function giveUp(): void {
    if (calls > 0) return endCalls();
    emit('content', held + buffer);
    held = '';
    buffer = '';
    mode = 'plain';
  }

  function startCall(): void {
    mode = 'object';
    scan = { opened: false, phase: 'key', key: '', raw: '', inString: false, escaped: false, depth: 0, name: null, pendingArguments: '', sentArguments: false };
  }

  /** Argument text read in one push goes out as one fragment. */
  function sendArguments(text: string): void {
    if (!text) return;
    scan!.sentArguments = true;
    const last = out.at(-1);
    if (last?.type === 'arguments' && last.index === calls - 1) last.text += text;
    else out.push({ type: 'arguments', index: calls - 1, text });
  }

  /** A value of the call object is complete. Returns false when the object is not a call to an offered function. */
  function valueDone(s: CallScan): boolean {
    if (s.key === 'name') {
      let name: unknown;
      try {
        name = JSON.parse(s.raw);
      } catch {
        return false;
      }
      if (typeof name !== 'string' || !o.toolNames.has(name) || s.name !== null) return false;
      s.name = name;
      calls++;
      held = '';
      const { prefix, length } = o.format.toolCalls.callId;
      out.push({ type: 'call', index: calls - 1, id: prefix + randomAlnum(length), name });
      sendArguments(s.pendingArguments);
      s.pendingArguments = '';
    } else if (argumentKeys.has(s.key)) {
      // Arguments written as a JSON string (some models do) are that string's text; an object was sent as it came.
      if (s.raw.startsWith('"')) {
        try {
          const text = JSON.parse(s.raw) as string;
          if (s.name !== null) sendArguments(text);
          else s.pendingArguments = text;
        } catch {
          return false;
        }
      }
    }
    return true;
  }

  /** Reads one character of a call object; returns 'more', 'end' (object closed) or 'bad'. */
  function scanChar(s: CallScan, c: string): 'more' | 'end' | 'bad' {
    if (!s.opened) {
      if (isSpace(c)) return 'more';
      if (c !== '{') return 'bad';
      s.opened = true;
      return 'more';
    }
    if (s.phase === 'key' || s.phase === 'next') {
      if (s.inString) {
        if (s.escaped) s.escaped = false;
        else if (c === '\\') s.escaped = true;
        else if (c === '"') {
          s.inString = false;
          try {
            s.key = JSON.parse(`"${s.raw}"`) as string;
          } catch {
            return 'bad';
          }
          s.phase = 'colon';
          return 'more';
        }
        s.raw += c;
        return 'more';
      }
      if (isSpace(c) || (c === ',' && s.phase === 'next')) return 'more';
      if (c === '}') return 'end';
      if (c !== '"') return 'bad';
      s.inString = true;
      s.raw = '';
      return 'more';
    }
    if (s.phase === 'colon') {
      if (isSpace(c)) return 'more';
      if (c !== ':') return 'bad';
      s.phase = 'value';
      s.raw = '';
      s.depth = 0;
      return 'more';
    }
    // phase 'value': strings and containers end at their own closing character, bare scalars at the ',' or '}' after them.
    if (s.raw === '' && isSpace(c)) return 'more';
    if (!s.inString && s.depth === 0 && s.raw !== '' && (c === ',' || c === '}')) {
      if (!valueDone(s)) return 'bad';
      s.phase = 'next';
      s.raw = '';
      return c === '}' ? 'end' : 'more';
    }
    s.raw += c;
    if (argumentKeys.has(s.key) && (s.raw[0] === '{' || s.raw[0] === '[')) {
      if (s.name !== null) sendArguments(c);
      else s.pendingArguments += c;
    }
    let ended = false;
    if (s.inString) {
      if (s.escaped) s.escaped = false;
      else if (c === '\\') s.escaped = true;
      else if (c === '"') {
        s.inString = false;
        ended = s.depth === 0;
      }
    } else if (c === '"') s.inString = true;
    else if (c === '{' || c === '[') s.depth++;
    else if (c === '}' || c === ']') {
      if (s.depth === 0) return 'bad';
      s.depth--;
      ended = s.depth === 0;
    }
    if (!ended) return 'more';
    if (!valueDone(s)) return 'bad';
    s.phase = 'next';
    s.raw = '';
    return 'more';
  }

  /** Processes the buffer as far as it can be decided; `final` means no more text will come. */
  function run(final: boolean): void {
    for (;;) {
      if (mode === 'plain') {
        emit('content', buffer);
        buffer = '';
        return;
      }
      if (mode === 'done') {
        buffer = '';
        return;
      }
      if (mode === 'start') {
        // Leading whitespace is dropped after a think block, and waits only while a think block or a bare-JSON call may follow.
        if (thinkDone) buffer = buffer.trimStart();
        const body = buffer.trimStart();
        const mayOpen = (think !== null && !thinkDone) || (callsOn && o.format.toolCalls.bareJson);
        if (body === '' && !final && (mayOpen || thinkDone)) return;
        if (think && !thinkDone) {
          if (body.startsWith(think.open)) {
            buffer = body.slice(think.open.length);
            mode = 'think';
            thinkDone = true;
            continue;
          }
          if (think.open.startsWith(body) && !final) return;
        }
        if (callsOn && o.format.toolCalls.bareJson && body.startsWith('{')) {
          held = buffer.slice(0, buffer.length - body.length);
          buffer = body;
          startCall();
          continue;
        }
        mode = 'content';
        continue;
      }
      if (mode === 'think') {
        const at = buffer.indexOf(think!.close);
        if (at >= 0) {
          emitReasoning(buffer.slice(0, at).trimEnd());
          buffer = buffer.slice(at + think!.close.length);
          mode = 'start';
          continue;
        }
        const keep = final ? 0 : heldBack(buffer, [think!.close]);
        emitReasoning(buffer.slice(0, buffer.length - keep));
        buffer = buffer.slice(buffer.length - keep);
        return;
      }
      if (mode === 'content') {
        let at = -1;
        let trigger = '';
        for (const t of triggers) {
          const i = buffer.indexOf(t);
          if (i >= 0 && (at < 0 || i < at)) [at, trigger] = [i, t];
        }
        if (at >= 0) {
          const before = buffer.slice(0, at);
          const kept = before.trimEnd();
          emit('content', kept);
          held = before.slice(kept.length) + trigger;
          buffer = buffer.slice(at + trigger.length);
          mode = 'calls';
          continue;
        }
        // With calls possible, trailing whitespace waits too: content before a call is trimmed.
        const keep = final || !callsOn ? 0 : heldBack(buffer, triggers);
        emit('content', buffer.slice(0, buffer.length - keep));
        buffer = buffer.slice(buffer.length - keep);
        return;
      }
      if (mode === 'calls') {
        let i = 0;
        while (i < buffer.length && buffer[i] !== '{') {
          // Before the first call only whitespace and a list's '[' may come between the trigger and the object.
          if (calls === 0 && !isSpace(buffer[i]) && buffer[i] !== '[') break;
          i++;
        }
        if (calls === 0) held += buffer.slice(0, i);
        buffer = buffer.slice(i);
        if (buffer === '') {
          if (final) giveUp();
          return;
        }
        if (buffer[0] !== '{' || calls >= o.maxCalls) {
          giveUp();
          continue;
        }
        startCall();
        continue;
      }
      // mode === 'object'
      const s = scan!;
      let i = 0;
      let result: 'more' | 'end' | 'bad' = 'more';
      for (; i < buffer.length && result === 'more'; i++) result = scanChar(s, buffer[i]);
      if (calls === 0) held += buffer.slice(0, i);
      buffer = buffer.slice(i);
      if (result === 'bad') {
        giveUp();
        continue;
      }
      if (result === 'end') {
        if (s.name === null) {
          giveUp();
          continue;
        }
        closeCall();
        mode = 'calls';
        continue;
      }
      if (final) giveUp();
      return;
    }
  }

  /** Reasoning without the whitespace the template puts around it. */
  function emitReasoning(text: string): void {
    emit('reasoning', reasoningSent ? text : text.trimStart());
  }

  return {
    push(text) {
      out = [];
      buffer += text;
      run(false);
      return out;
    },
    end() {
      out = [];
      run(true);
      return out;
    },
    get thinking() {
      return mode === 'think';
    },
    get calls() {
      return calls;
    },
  };
}

/** Names of the function tools a request offers (calls to anything else stay plain text). */
export function functionToolNames(tools: { type: string; function?: { name: string } }[] | undefined): Set<string> {
  return new Set((tools ?? []).flatMap((t) => (t.type === 'function' && t.function ? [t.function.name] : [])));
}
