// PostgreSQL for tests: a fresh, empty database per call on the one server scripts/run-tests.mjs starts for the run,
// and the switch (LOCALTUNE_TEST_ENGINE=postgres) that puts every test server's data dir on a database of its own.
import pg from 'pg';
import { randomAlnum } from '../../src/store/ids.ts';

/** The server's maintenance-database URL, which scripts/run-tests.mjs exports when PostgreSQL tests are selected. */
export const POSTGRES_URL_ENV = 'LOCALTUNE_TEST_POSTGRES_URL';

/** Creates an empty database on the test server and returns its URL. */
export async function freshDatabaseUrl(): Promise<string> {
  const admin = process.env[POSTGRES_URL_ENV];
  if (!admin) {
    throw new Error(`${POSTGRES_URL_ENV} is not set: run PostgreSQL tests through \`node scripts/run-tests.mjs FILE…\`, which starts the test server`);
  }
  const name = `lt_${randomAlnum(12).toLowerCase()}`;
  const client = new pg.Client(admin);
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Which engine the servers and CLI commands of this test run use: `LOCALTUNE_TEST_ENGINE=postgres`, else SQLite. */
export const testEngine: 'sqlite' | 'postgres' = process.env.LOCALTUNE_TEST_ENGINE === 'postgres' ? 'postgres' : 'sqlite';

const databases = new Map<string, Promise<string>>();

/** The environment that points a process at `dataDir`'s database: none on SQLite, a database made on first use on PostgreSQL. */
export async function engineEnv(dataDir: string): Promise<Record<string, string>> {
  if (testEngine === 'sqlite') return {};
  let url = databases.get(dataDir);
  if (!url) {
    url = freshDatabaseUrl();
    databases.set(dataDir, url);
  }
  return { LOCALTUNE_DATABASE_URL: await url };
}
