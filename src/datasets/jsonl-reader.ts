// Streaming JSONL reader: one parsed object per line, bounded memory, problems reported with the line number.
import { createReadStream } from 'node:fs';

export type JsonlProblemKind = 'invalid_utf8' | 'invalid_json' | 'data_type' | 'line_too_long';

/** One non-blank line: its parsed object, or why it could not be read. Line numbers count from 1. */
export type JsonlLine =
  | { lineNumber: number; value: Record<string, unknown> }
  | { lineNumber: number; problem: JsonlProblemKind; message: string };

export interface JsonlReaderOptions {
  /** Longest accepted line in bytes (without its line end); longer lines are skipped and reported. */
  maxLineBytes?: number;
  /** Bytes read per chunk from disk. */
  chunkBytes?: number;
}

export const DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024;

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const BOM = [0xef, 0xbb, 0xbf];
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Reads `path` line by line. Memory stays at one chunk plus the longest accepted line, whatever the file size.
 * A UTF-8 BOM on the first line, CRLF line ends and blank lines are tolerated.
 */
export async function* readJsonl(path: string, options: JsonlReaderOptions = {}): AsyncGenerator<JsonlLine> {
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  let pending: Buffer[] = []; // pieces of the current line seen so far
  let pendingBytes = 0;
  let tooLong = false; // the current line passed maxLineBytes: its remaining bytes are dropped
  let lineNumber = 0;

  function finishLine(): JsonlLine | undefined {
    lineNumber++;
    if (tooLong) {
      tooLong = false;
      return { lineNumber, problem: 'line_too_long', message: `line is longer than ${maxLineBytes} bytes` };
    }
    let bytes = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    if (lineNumber === 1 && bytes.length >= 3 && bytes[0] === BOM[0] && bytes[1] === BOM[1] && bytes[2] === BOM[2]) {
      bytes = bytes.subarray(3);
    }
    if (bytes.length > 0 && bytes[bytes.length - 1] === CARRIAGE_RETURN) bytes = bytes.subarray(0, bytes.length - 1);
    if (bytes.length > maxLineBytes) {
      return { lineNumber, problem: 'line_too_long', message: `line is longer than ${maxLineBytes} bytes` };
    }
    return parseLine(lineNumber, bytes);
  }

  for await (const chunk of createReadStream(path, { highWaterMark: options.chunkBytes ?? 1 << 20 }) as AsyncIterable<Buffer>) {
    let from = 0;
    for (let nl = chunk.indexOf(NEWLINE, from); nl !== -1; nl = chunk.indexOf(NEWLINE, from)) {
      append(chunk.subarray(from, nl));
      const line = finishLine();
      if (line) yield line;
      from = nl + 1;
    }
    append(chunk.subarray(from));
  }
  if (pendingBytes > 0 || tooLong) {
    const line = finishLine();
    if (line) yield line;
  }

  function append(piece: Buffer): void {
    if (tooLong || piece.length === 0) return;
    // +1 leaves room for a CR that belongs to the line end, not the line.
    if (pendingBytes + piece.length > maxLineBytes + 1) {
      tooLong = true;
      pending = [];
      pendingBytes = 0;
      return;
    }
    pending.push(piece);
    pendingBytes += piece.length;
  }
}

function parseLine(lineNumber: number, bytes: Uint8Array): JsonlLine | undefined {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    return { lineNumber, problem: 'invalid_utf8', message: 'line is not valid UTF-8' };
  }
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { lineNumber, problem: 'invalid_json', message: `line is not valid JSON (${(e as Error).message})` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { lineNumber, problem: 'data_type', message: 'line is not a JSON object' };
  }
  return { lineNumber, value: value as Record<string, unknown> };
}
