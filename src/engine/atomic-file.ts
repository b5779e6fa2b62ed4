// Writing a file so readers see either the old one or the complete new one, never half: temp file + fsync + rename.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** A unique temp path beside `file` (same folder, so the rename stays on one filesystem). */
export function tempPathBeside(file: string): string {
  return join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** Calls `write` with the descriptor of a temp file, then fsyncs it and renames it over `file`. */
export function writeFileAtomically(file: string, write: (fd: number) => void): void {
  const tmp = tempPathBeside(file);
  const fd = openSync(tmp, 'w');
  try {
    write(fd);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, file);
}

export function writeTextAtomically(file: string, text: string): void {
  writeFileAtomically(file, (fd) => writeFileSync(fd, text));
}

/** writeSync until every byte is written (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}
