// Runs every test/**/*.test.ts with node:test (Node 20's --test takes no globs). When a selected test uses PostgreSQL,
// starts one throwaway PostgreSQL server for the whole run (scripts/lib/test-postgres.ts) and stops it afterwards.
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
const needsPostgres = files.some((f) => readFileSync(f, 'utf8').includes('helpers/postgres'));

let postgres;
if (needsPostgres) {
  register();
  const { startTestPostgres } = await import('./lib/test-postgres.ts');
  postgres = await startTestPostgres();
}
let status;
try {
  status = await runNodeTest(files, { ...process.env, ...(postgres ? { LOCALTUNE_TEST_POSTGRES_URL: postgres.url } : {}) });
} finally {
  await postgres?.stop();
}
process.exit(status);
