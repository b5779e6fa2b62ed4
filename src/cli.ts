// localtune command line: `localtune [serve]`, `localtune keys …`, `localtune engine …`. The only place that sets an exit code.
import { ConfigError, configFlags, loadConfig } from './config.ts';
import { startServer } from './server.ts';
import { openDatabase } from './store/db.ts';
import { apiKeyStore } from './store/api-keys.ts';
import { MigrationError } from './store/migrations.ts';

const usage = `usage: localtune [serve] [options]           start the API server (default command)
       localtune keys create --project NAME  create an API key for a project (printed once)
       localtune keys list                   list keys (ids, projects, prefixes)
       localtune keys revoke KEY_ID          revoke a key
       localtune engine …                    engine verification commands (localtune engine --help)
       localtune --help
       (keys commands take --data-dir D too)

options (each also an environment variable; flags win):
  ${configFlags.join('\n  ')}`;

/** Removes `--name value` / `--name=value` from args and returns the value. */
function takeOption(args: string[], name: string): string | undefined {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const [arg] = args.splice(i, 1);
  if (arg!.includes('=')) return arg!.slice(name.length + 1);
  const [value] = args.splice(i, 1);
  if (value === undefined) throw new ConfigError(`option '${name}' needs a value`);
  return value;
}

async function serve(args: string[]): Promise<void> {
  const server = await startServer(loadConfig(args));
  const stop = () => {
    server.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function keys(args: string[]): void {
  const [action, ...rest] = args;
  const project = takeOption(rest, '--project');
  const dataDir = takeOption(rest, '--data-dir');
  const positional = rest;
  if (positional.length > 1) throw new ConfigError(`unexpected arguments: ${positional.slice(1).join(' ')}`);
  const db = openDatabase(loadConfig(dataDir ? ['--data-dir', dataDir] : []).dataDir);
  try {
    const store = apiKeyStore(db);
    if (action === 'create') {
      if (!project || !/^[A-Za-z0-9_-]{1,64}$/.test(project)) throw new ConfigError('keys create needs --project NAME (letters, digits, _ or -)');
      const { key, row } = store.create(project);
      console.log(`created key ${row.id} for project "${project}"; it is shown only now:`);
      console.log(key);
    } else if (action === 'list') {
      for (const k of store.list()) {
        console.log(`${k.id}\t${k.project}\t${k.key_prefix}…\t${k.revoked_at ? 'revoked' : 'active'}`);
      }
    } else if (action === 'revoke') {
      const id = positional[0];
      if (!id) throw new ConfigError('keys revoke needs a key id (see keys list)');
      if (!store.revoke(id)) throw new ConfigError(`no active key with id ${id}`);
      console.log(`revoked ${id}`);
    } else {
      throw new ConfigError(`unknown keys action '${action ?? ''}' (create, list, revoke)`);
    }
  } finally {
    db.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  if (first === '--help' || first === 'help' || first === '-h') return console.log(usage);
  if (first === undefined || first.startsWith('--')) return serve(argv);
  if (first === 'serve') return serve(rest);
  if (first === 'keys') return keys(rest);
  if (first === 'engine') {
    process.exitCode = await (await import('./engine/train/verify-command.ts')).runEngineCommand(rest);
    return;
  }
  throw new ConfigError(`unknown command '${first}' (try --help)`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof MigrationError) {
    console.error(`localtune: ${err.message}`);
  } else if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
    console.error(`localtune: ${(err as Error).message}: another process is using that port (choose one with --port or LOCALTUNE_PORT)`);
  } else {
    console.error(err);
  }
  process.exitCode = 1;
});
