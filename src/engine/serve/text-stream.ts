// Generated ids → text as it becomes final: UTF-8 characters split across byte tokens are held until complete, stop strings are cut out (also when they span tokens).

/** The decode part of a tokenizer (ModelTokenizer fits). */
export interface Decoder {
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string;
}

/**
 * A decoder that skips special tokens except `kept` ones (id → text): markers a reply is parsed by, such as Llama's
 * `<|python_tag|>` or Mistral's `[TOOL_CALLS]`, which their tokenizers mark special.
 */
export function keepingTokens(decoder: Decoder, kept: ReadonlyMap<number, string>): Decoder {
  if (kept.size === 0) return decoder;
  return {
    decode(ids, options) {
      if (!options?.skipSpecialTokens) return decoder.decode(ids, options);
      let text = '';
      let from = 0;
      const all = Array.from(ids);
      all.forEach((id, i) => {
        const marker = kept.get(id);
        if (marker === undefined) return;
        text += decoder.decode(all.slice(from, i), options) + marker;
        from = i + 1;
      });
      return text + decoder.decode(all.slice(from), options);
    },
  };
}

export interface TextStream {
  /** Adds one generated id; returns the text that became final (possibly ''). */
  push(id: number): string;
  /** True once a stop string appeared: the text ends before it, and later ids are ignored. */
  readonly stopped: boolean;
  /** Ends the stream: returns the text held back as a possible stop-string prefix. */
  flush(): string;
  /** All final text so far. */
  readonly text: string;
}

/**
 * Incremental detokenization as Hugging Face TGI does it: decode a short window of ids twice (with and without the
 * newest) and emit the difference once it no longer ends in U+FFFD (an unfinished UTF-8 sequence). Special tokens are skipped.
 */
export function createTextStream(decoder: Decoder, stops: readonly string[]): TextStream {
  const ids: number[] = [];
  let prefixOffset = 0;
  let readOffset = 0;
  let decoded = ''; // everything decoded so far
  let emitted = 0; // characters of `decoded` handed out
  let stopped = false;
  const longestStop = Math.max(0, ...stops.map((s) => s.length));
  const decode = (from: number, to: number) => decoder.decode(ids.slice(from, to), { skipSpecialTokens: true });

  /** Length of the longest suffix of `decoded` that is a proper prefix of some stop string (must be held back). */
  function heldBack(): number {
    for (let n = Math.min(longestStop - 1, decoded.length - emitted); n > 0; n--) {
      const tail = decoded.slice(decoded.length - n);
      if (stops.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }

  return {
    push(id) {
      if (stopped) return '';
      ids.push(id);
      const before = decode(prefixOffset, readOffset);
      const after = decode(prefixOffset, ids.length);
      if (after.length <= before.length || after.endsWith('\uFFFD')) return '';
      decoded += after.slice(before.length);
      prefixOffset = readOffset;
      readOffset = ids.length;
      // A stop string may start in text already emitted only if it was held back, so search from there.
      const searchFrom = Math.max(0, emitted - longestStop);
      let cut = -1;
      for (const s of stops) {
        const at = decoded.indexOf(s, searchFrom);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        stopped = true;
        decoded = decoded.slice(0, cut);
      }
      const end = stopped ? decoded.length : decoded.length - heldBack();
      const out = decoded.slice(emitted, Math.max(emitted, end));
      emitted = Math.max(emitted, end);
      return out;
    },
    get stopped() {
      return stopped;
    },
    flush() {
      // An unfinished UTF-8 sequence at the very end is written as U+FFFD, as a full decode would.
      if (!stopped && readOffset < ids.length) decoded += decode(prefixOffset, ids.length).slice(decode(prefixOffset, readOffset).length);
      readOffset = ids.length;
      const out = decoded.slice(emitted);
      emitted = decoded.length;
      return out;
    },
    get text() {
      return decoded.slice(0, emitted);
    },
  };
}
