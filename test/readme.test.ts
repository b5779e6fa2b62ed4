// The README is tested like code: its two commands exist, every `localtune …` command and flag it names is in
// that command's --help, every setting is documented, and its curl and Node quickstarts run against a real server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configFlags } from '../src/config.ts';
import { startTestServer } from './helpers/server.ts';

const readme = readFileSync('README.md', 'utf8');
const packageJson = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> };

const help = (...args: string[]) => execFileSync(process.execPath, ['bin/localtune.js', ...args], { encoding: 'utf8' });

/** The fenced block right after `<!-- quickstart:NAME … -->`. */
function quickstartBlock(name: string): string {
  const m = new RegExp(`<!-- quickstart:${name}[^>]*-->\\s*\`\`\`\\w+\\n([\\s\\S]*?)\`\`\``).exec(readme);
  assert.ok(m, `README has a quickstart:${name} block`);
  return m[1]!;
}

test('the two set-up commands are the README\'s, and CI runs the test one', () => {
  assert.match(readme, /^npm ci && npm run demo\b/m);
  assert.match(readme, /^npm ci && npm test\b/m);
  assert.match(readFileSync('.ci/run', 'utf8'), /^npm ci && npm test$/m);
  for (const [, script] of readme.matchAll(/npm run ([\w:-]+)/g)) assert.ok(packageJson.scripts[script!], `npm run ${script} is a package.json script`);
  assert.ok(packageJson.scripts.start && packageJson.scripts.test);
});

test('every localtune command, action and flag the README names is in that command\'s --help', () => {
  const helpOf = new Map<string, string>([['', help('--help')]]);
  for (const command of ['serve', 'demo', 'keys', 'models', 'jobs', 'export', 'engine']) helpOf.set(command, help(command, '--help'));
  const uses = [...readme.matchAll(/localtune (serve|demo|keys|models|jobs|export|engine)\b([^`\n|(]*)/g)];
  assert.ok(uses.length > 15, `found ${uses.length} localtune commands in the README`);
  for (const [whole, command, rest] of uses) {
    const text = helpOf.get(command!)!;
    const action = /^ ([a-z]+)\b/.exec(rest!)?.[1];
    if (action && command !== 'serve' && command !== 'demo') assert.match(text, new RegExp(`localtune ${command} ${action}\\b`), `${whole.trim()}: '${action}' is in localtune ${command} --help`);
    for (const [flag] of rest!.matchAll(/--[a-z][a-z-]*/g)) if (flag !== '--help') assert.ok(text.includes(flag), `${whole.trim()}: ${flag} is in localtune ${command} --help`);
  }
});

test('every setting (flag and environment variable) is in the README\'s configuration table', () => {
  const sources = readFileSync('src/config.ts', 'utf8') + readFileSync('src/engine/onnx/session.ts', 'utf8');
  const envVars = new Set(sources.match(/LOCALTUNE_[A-Z_]+/g));
  assert.ok(envVars.size >= 10);
  for (const name of envVars) assert.match(readme, new RegExp(`\\| \`${name}\` \\|`), `${name} has a row in the configuration table`);
  for (const entry of configFlags) {
    const flag = entry.split(' ')[0]!;
    assert.match(readme, new RegExp(`\\| \`${flag}\` \\|`), `${flag} has a row in the configuration table`);
  }
});

test('the curl and Node quickstarts run as written against a server', { timeout: 240_000 }, async () => {
  const server = await startTestServer();
  const env = { ...process.env, OPENAI_BASE_URL: server.baseURL, OPENAI_API_KEY: 'sk-local' };
  const scratch = join('.tmp', `readme-${process.pid}`);
  try {
    const curl = spawnSync('bash', ['-euo', 'pipefail', '-c', quickstartBlock('curl')], { env, encoding: 'utf8', timeout: 180_000 });
    assert.equal(curl.status, 0, `curl quickstart failed: ${curl.stderr}\n${server.output()}`);
    const completion = JSON.parse(curl.stdout) as { object: string; model: string; choices: { message: { content: string } }[] };
    assert.equal(completion.object, 'chat.completion');
    assert.match(completion.model, /^ft:localtune-default:default:support:/);

    // The Node block runs from inside the repo so `openai` resolves to the dev dependency.
    mkdirSync(scratch, { recursive: true });
    writeFileSync(join(scratch, 'quickstart.mjs'), quickstartBlock('node'));
    const node = spawnSync(process.execPath, [join(scratch, 'quickstart.mjs')], { env, encoding: 'utf8', timeout: 180_000 });
    assert.equal(node.status, 0, `Node quickstart failed: ${node.stderr}\n${server.output()}`);
    assert.match(node.stdout, /Fine-tuning job started/);
    assert.match(node.stdout, /The job has successfully completed/);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await server.stop();
  }
});
