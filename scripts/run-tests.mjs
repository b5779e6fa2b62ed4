// Runs every test/**/*.test.ts with node:test (Node 20's --test takes no globs), then (full runs only) the SDK tests a
// second time on the PostgreSQL engine. When a pass needs PostgreSQL, starts one throwaway server for the whole run
// (scripts/lib/test-postgres.ts) and stops it afterwards.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { register } from 'tsx/esm/api';

function find(dir) {
  return readdirSync(dir).sort().flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return find(p);
    return name.endsWith('.test.ts') ? [p] : [];
  });
}

function runNodeTest(files, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], { stdio: 'inherit', env });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

const only = process.argv.slice(2);
const files = only.length ? only : find('test');
const postgresPass = { LOCALTUNE_TEST_ENGINE: 'postgres' };
// The full run checks that both engines keep one behaviour: every SDK test (test/http/*-sdk.test.ts) runs a second time
// against PostgreSQL. LOCALTUNE_TEST_ENGINE=postgres runs any other file so too.
const POSTGRES_PASS = find(join('test', 'http')).filter((f) => f.endsWith('-sdk.test.ts'));
const passes = [{ files, env: {} }];
if (!only.length) passes.push({ files: POSTGRES_PASS, env: postgresPass });
const needsPostgres = process.env.LOCALTUNE_TEST_ENGINE === 'postgres' || passes.length > 1
  || files.some((f) => readFileSync(f, 'utf8').includes('helpers/postgres'));

let postgres;
if (needsPostgres) {
  register();
  const { startTestPostgres } = await import('./lib/test-postgres.ts');
  postgres = await startTestPostgres();
}
let status = 0;
try {
  for (const pass of passes) {
    if (pass.env === postgresPass) console.log(`\n# the SDK tests again, on PostgreSQL (LOCALTUNE_TEST_ENGINE=postgres)\n`);
    const started = Date.now();
    const code = await runNodeTest(pass.files, { ...process.env, ...pass.env, ...(postgres ? { LOCALTUNE_TEST_POSTGRES_URL: postgres.url } : {}) });
    if (pass.env === postgresPass) console.log(`# PostgreSQL pass: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    status ||= code;
  }
} finally {
  await postgres?.stop();
}
process.exit(status);
