// `localtune keys create|list|revoke`: API keys in the store (the data directory's database, or PostgreSQL), each granting one project.
import { ConfigError, loadConfig } from '../config.ts';
import { openStore } from '../store/open.ts';
import { takeOption } from './options.ts';

export const KEYS_USAGE = `usage: localtune keys create --project NAME   create an API key for a project (printed once)
       localtune keys list                   list keys (ids, projects, prefixes, revoked or active)
       localtune keys revoke KEY_ID          revoke a key
       every keys command takes --data-dir D (env LOCALTUNE_DATA_DIR, default ./data) or --database-url URL (env LOCALTUNE_DATABASE_URL)
       once a key exists the server requires one on every /v1 request and may listen beyond localhost`;

export async function keysCommand(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  const project = takeOption(rest, '--project');
  const dataDir = takeOption(rest, '--data-dir');
  const databaseUrl = takeOption(rest, '--database-url');
  const positional = rest;
  if (positional.length > 1) throw new ConfigError(`unexpected arguments: ${positional.slice(1).join(' ')}`);
  const config = loadConfig([...(dataDir ? ['--data-dir', dataDir] : []), ...(databaseUrl ? ['--database-url', databaseUrl] : [])]);
  const { keys: store, close } = await openStore(config);
  try {
    if (action === 'create') {
      if (!project || !/^[A-Za-z0-9_-]{1,64}$/.test(project)) throw new ConfigError('keys create needs --project NAME (letters, digits, _ or -)');
      const { key, row } = await store.create(project);
      console.log(`created key ${row.id} for project "${project}"; it is shown only now:`);
      console.log(key);
    } else if (action === 'list') {
      for (const k of await store.list()) {
        console.log(`${k.id}\t${k.project}\t${k.key_prefix}…\t${k.revoked_at ? 'revoked' : 'active'}`);
      }
    } else if (action === 'revoke') {
      const id = positional[0];
      if (!id) throw new ConfigError('keys revoke needs a key id (see keys list)');
      if (!(await store.revoke(id))) throw new ConfigError(`no active key with id ${id}`);
      console.log(`revoked ${id}`);
    } else {
      throw new ConfigError(`unknown keys action '${action ?? ''}' (create, list, revoke)`);
    }
  } finally {
    await close();
  }
}
