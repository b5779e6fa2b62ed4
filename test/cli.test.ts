import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

test('localtune --help prints usage', () => {
  const out = execFileSync(process.execPath, ['bin/localtune.js', '--help'], { encoding: 'utf8' });
  assert.match(out, /usage: localtune/);
});
