// `npm run bench`: runs every scripts/bench-*.ts in turn, each in its own process, and stops at the first failure.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const dir = fileURLToPath(new URL('.', import.meta.url));
// `npm run bench -- train serve` picks benches by name; everything from the first flag on goes to each of them
// (e.g. `npm run bench -- train --cases small --steps 8`).
const firstFlag = process.argv.findIndex((a, i) => i >= 2 && a.startsWith('--'));
const only = process.argv.slice(2, firstFlag === -1 ? undefined : firstFlag);
const flags = firstFlag === -1 ? [] : process.argv.slice(firstFlag);
const benches = readdirSync(dir).filter((n) => /^bench-.+\.ts$/.test(n)).filter((n) => only.length === 0 || only.some((o) => n.includes(o))).sort();

for (const name of benches) {
  console.log(`== ${name}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(dir, name), ...flags], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${name} failed (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}
