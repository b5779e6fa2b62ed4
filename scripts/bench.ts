// `npm run bench`: runs every scripts/bench-*.ts in turn, each in its own process, and stops at the first failure.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const dir = fileURLToPath(new URL('.', import.meta.url));
const only = process.argv.slice(2);
const benches = readdirSync(dir).filter((n) => /^bench-.+\.ts$/.test(n)).filter((n) => only.length === 0 || only.some((o) => n.includes(o))).sort();

for (const name of benches) {
  console.log(`== ${name}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(dir, name)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${name} failed (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}
