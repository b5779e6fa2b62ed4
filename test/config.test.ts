// Configuration precedence: defaults < LOCALTUNE_* environment < flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve, join } from 'node:path';
import { ConfigError, loadConfig } from '../src/config.ts';

test('defaults', () => {
  const c = loadConfig([], {});
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, 8000);
  assert.equal(c.dataDir, resolve('data'));
  assert.equal(c.modelsDir, join(resolve('data'), 'models'));
  assert.equal(c.maxUploadBytes, 512 * 1024 * 1024);
});

test('environment overrides defaults, flags override environment', () => {
  const env = { LOCALTUNE_PORT: '9000', LOCALTUNE_DATA_DIR: '/tmp/lt-env', LOCALTUNE_MAX_UPLOAD_MB: '2' };
  const fromEnv = loadConfig([], env);
  assert.equal(fromEnv.port, 9000);
  assert.equal(fromEnv.dataDir, '/tmp/lt-env');
  assert.equal(fromEnv.modelsDir, '/tmp/lt-env/models');
  assert.equal(fromEnv.maxUploadBytes, 2 * 1024 * 1024);
  const fromFlags = loadConfig(['--port', '9100', '--data-dir=/tmp/lt-flag', '--models-dir', '/tmp/m'], env);
  assert.equal(fromFlags.port, 9100);
  assert.equal(fromFlags.dataDir, '/tmp/lt-flag');
  assert.equal(fromFlags.modelsDir, '/tmp/m');
});

test('bad values and unknown flags are errors that name the source', () => {
  assert.throws(() => loadConfig(['--port', 'abc'], {}), (e: unknown) => e instanceof ConfigError && /--port/.test(e.message));
  assert.throws(() => loadConfig([], { LOCALTUNE_PORT: '70000' }), /LOCALTUNE_PORT/);
  assert.throws(() => loadConfig(['--prot', '1'], {}), /unknown option '--prot'/);
  assert.throws(() => loadConfig(['--port'], {}), /needs a value/);
});

test('API keys from LOCALTUNE_API_KEYS / --api-keys as PROJECT:KEY pairs', () => {
  assert.deepEqual(loadConfig([], {}).apiKeys, []);
  assert.deepEqual(loadConfig([], { LOCALTUNE_API_KEYS: 'a:sk-aaaaaaaa, b-2:sk-b:with:colons' }).apiKeys,
    [{ project: 'a', key: 'sk-aaaaaaaa' }, { project: 'b-2', key: 'sk-b:with:colons' }]);
  assert.throws(() => loadConfig(['--api-keys', 'nokey'], {}), /PROJECT:KEY/);
  assert.throws(() => loadConfig(['--api-keys', 'p:short'], {}), /8\+ characters/);
});

test('fine-tuning settings: defaults, and aliases as ALIAS=MODEL pairs', () => {
  const c = loadConfig([], {});
  assert.equal(c.maxConcurrentJobs, 1);
  assert.equal(c.resumePointSeconds, 60);
  assert.equal(c.trainThreads, undefined);
  assert.equal(c.modelAliases.get('gpt-4o-mini-2024-07-18'), 'localtune-default');
  const set = loadConfig(['--max-concurrent-jobs', '2', '--base-learning-rate', '1e-4'], { LOCALTUNE_MODEL_ALIASES: 'gpt-4.1-mini=my-llama, x=y', LOCALTUNE_TRAIN_THREADS: '3' });
  assert.equal(set.maxConcurrentJobs, 2);
  assert.equal(set.baseLearningRate, 1e-4);
  assert.equal(set.trainThreads, 3);
  assert.deepEqual([...set.modelAliases], [['gpt-4.1-mini', 'my-llama'], ['x', 'y']]);
  assert.deepEqual([...loadConfig([], { LOCALTUNE_MODEL_ALIASES: 'none' }).modelAliases], []);
  assert.throws(() => loadConfig([], { LOCALTUNE_MODEL_ALIASES: 'nomodel' }), /ALIAS=MODEL/);
  assert.throws(() => loadConfig(['--base-learning-rate', '-1'], {}), /--base-learning-rate/);
});

test('database URL: SQLite without one; a postgres:// URL from LOCALTUNE_DATABASE_URL or --database-url; errors never echo it', () => {
  assert.equal(loadConfig([], {}).databaseUrl, undefined);
  const url = 'postgres://lt:secret@db.internal:5432/localtune';
  assert.equal(loadConfig([], { LOCALTUNE_DATABASE_URL: url }).databaseUrl, url);
  assert.equal(loadConfig(['--database-url', 'postgresql://h/db'], { LOCALTUNE_DATABASE_URL: url }).databaseUrl, 'postgresql://h/db');
  assert.throws(() => loadConfig(['--database-url', 'mysql://u:secret@h/db'], {}), (e: unknown) =>
    e instanceof ConfigError && /--database-url/.test(e.message) && !e.message.includes('secret'));
  assert.throws(() => loadConfig([], { LOCALTUNE_DATABASE_URL: 'not a url' }), /LOCALTUNE_DATABASE_URL: not a URL/);
});
