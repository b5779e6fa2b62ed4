// The command line: help for every command, `models list` with skipped folders, errors that say what to do.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cli = (...args: string[]) => spawnSync(process.execPath, ['bin/localtune.js', ...args], { encoding: 'utf8', env: { ...process.env, OPENAI_BASE_URL: '', OPENAI_API_KEY: '' } });

test('localtune --help prints usage naming every command', () => {
  const out = execFileSync(process.execPath, ['bin/localtune.js', '--help'], { encoding: 'utf8' });
  assert.match(out, /usage: localtune/);
  for (const command of ['serve', 'demo', 'keys', 'models list', 'jobs', 'engine']) assert.match(out, new RegExp(`localtune ${command}`));
});

test('every command answers --help with its own usage', () => {
  for (const [command, expected] of [['serve', /--port \(LOCALTUNE_PORT\)/], ['keys', /keys create --project NAME/], ['models', /models list/], ['jobs', /jobs events JOB_ID \[--follow\]/], ['demo', /localtune demo/]] as const) {
    const r = cli(command, '--help');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, expected, command);
  }
});

test('models list shows the built-in model and says why a folder is skipped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'localtune-cli-'));
  try {
    mkdirSync(join(dir, 'models', 'half-downloaded'), { recursive: true });
    const r = cli('models', 'list', '--models-dir', join(dir, 'models'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /localtune-default {2}LlamaForCausalLM/);
    assert.match(r.stdout, /skipped half-downloaded: .*config\.json is missing/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('jobs commands say how to reach a server when none answers', () => {
  const r = cli('jobs', 'list', '--base-url', 'http://127.0.0.1:9/v1');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot reach http:\/\/127\.0\.0\.1:9\/v1 .*--base-url or OPENAI_BASE_URL/);
});

test('unknown commands and actions are errors that point at --help', () => {
  assert.match(cli('nope').stderr, /unknown command 'nope' \(try --help\)/);
  assert.match(cli('jobs', 'frobnicate').stderr, /unknown jobs action 'frobnicate'/);
  assert.match(cli('models', 'show').stderr, /unknown models action 'show'/);
});
