// Makes sure a Chromium for the dashboard's browser test exists (installing Debian's `chromium` with apt-get when
// none is found), so `npm ci && npm test` works on a fresh Debian machine. `--print-path` prints the binary it found.
import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

const NAMES = ['chromium', 'chromium-browser', 'google-chrome-stable', 'google-chrome'];

function findChromium() {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    for (const name of NAMES) {
      try {
        accessSync(join(dir, name), constants.X_OK);
        return join(dir, name);
      } catch { /* not here */ }
    }
  }
  return null;
}

function aptInstall() {
  const run = (args) => spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
  // A fresh machine may have no package lists yet: update once, then retry.
  return run(['install', '-y', '--no-install-recommends', 'chromium']) || (run(['update']) && run(['install', '-y', '--no-install-recommends', 'chromium']));
}

let path = findChromium();
if (!path) {
  const canApt = process.platform === 'linux' && process.getuid?.() === 0 && spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
  console.error('ensure-chromium: no Chromium found for the dashboard browser test; ' + (canApt ? 'installing Debian\'s chromium with apt-get…' : 'cannot install it here'));
  if (canApt && aptInstall()) path = findChromium();
  if (!path) {
    console.error('ensure-chromium: install Chromium (Debian/Ubuntu: apt-get install chromium) or set CHROMIUM_PATH to a Chromium or Chrome binary');
    process.exit(1);
  }
}
if (process.argv.includes('--print-path')) process.stdout.write(path);
else console.error(`ensure-chromium: ${path} (${execFileSync(path, ['--version'], { encoding: 'utf8' }).trim()})`);
