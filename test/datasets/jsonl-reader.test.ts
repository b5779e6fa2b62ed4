import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readJsonl, type JsonlLine } from '../../src/datasets/jsonl-reader.ts';

const dir = mkdtempSync(join(tmpdir(), 'jsonl-reader-'));
let fileNo = 0;

async function read(content: string | Buffer, options = {}): Promise<JsonlLine[]> {
  const path = join(dir, `f${fileNo++}.jsonl`);
  writeFileSync(path, content);
  const lines: JsonlLine[] = [];
  for await (const line of readJsonl(path, options)) lines.push(line);
  return lines;
}

test('reads objects with their line numbers, skipping blank lines; the last line needs no newline', async () => {
  const lines = await read('{"a":1}\n\n   \n{"b":2}\n{"c":3}');
  assert.deepEqual(lines, [
    { lineNumber: 1, value: { a: 1 } },
    { lineNumber: 4, value: { b: 2 } },
    { lineNumber: 5, value: { c: 3 } },
  ]);
});

test('tolerates a UTF-8 BOM and CRLF line ends', async () => {
  const lines = await read(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":"é"}\r\n{"b":2}\r\n')]));
  assert.deepEqual(lines, [
    { lineNumber: 1, value: { a: 'é' } },
    { lineNumber: 2, value: { b: 2 } },
  ]);
});

test('a BOM after the first line is not silently dropped', async () => {
  const lines = await read(Buffer.concat([Buffer.from('{"a":1}\n'), Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"b":2}\n')]));
  assert.equal('problem' in lines[1]! && lines[1].problem, 'invalid_json');
});

test('rejects invalid UTF-8, invalid JSON and non-objects with the line number, and goes on reading', async () => {
  const lines = await read(Buffer.concat([
    Buffer.from('{"ok":1}\n{"bad":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n{nope\n[1,2]\n"text"\nnull\n{"ok":2}\n'),
  ]));
  assert.deepEqual(lines.map((l) => ('problem' in l ? `${l.lineNumber}:${l.problem}` : `${l.lineNumber}:ok`)), [
    '1:ok', '2:invalid_utf8', '3:invalid_json', '4:data_type', '5:data_type', '6:data_type', '7:ok',
  ]);
});

test('reports an over-long line once and reads the next one, across chunk boundaries', async () => {
  const long = `{"x":"${'a'.repeat(100)}"}`;
  const lines = await read(`{"a":1}\n${long}\r\n{"b":2}\n`, { maxLineBytes: 50, chunkBytes: 7 });
  assert.deepEqual(lines.map((l) => ('problem' in l ? `${l.lineNumber}:${l.problem}` : `${l.lineNumber}:ok`)), ['1:ok', '2:line_too_long', '3:ok']);
});

test('a line exactly at the limit is accepted, with or without CR; one byte more is not', async () => {
  const exact = `{"x":"${'a'.repeat(12)}"}`; // 20 bytes
  assert.equal(exact.length, 20);
  const lines = await read(`${exact}\n${exact}\r\n{"x":"${'a'.repeat(13)}"}\n`, { maxLineBytes: 20, chunkBytes: 3 });
  assert.deepEqual(lines.map((l) => ('problem' in l ? l.problem : 'ok')), ['ok', 'ok', 'line_too_long']);
});
