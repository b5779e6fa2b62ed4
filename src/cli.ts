// localtune command line: `localtune [serve]`, `worker`, `demo`, `keys …`, `models …`, `jobs …`, `export …`, `engine …`. The only place that sets an exit code.
import { ConfigError, configFlags, loadConfig } from './config.ts';
import { startServer, startWorker } from './server.ts';
import { MigrationError } from './store/migrations.ts';
import { ApiRequestError } from './cli/api-client.ts';
import { DEMO_USAGE, demoCommand } from './cli/demo.ts';
import { EXPORT_USAGE, exportCommand } from './cli/export.ts';
import { JOBS_USAGE, jobsCommand } from './cli/jobs.ts';
import { KEYS_USAGE, keysCommand } from './cli/keys.ts';
import { MODELS_USAGE, modelsCommand } from './cli/models.ts';
import { wantsHelp } from './cli/options.ts';

const SERVE_USAGE = `usage: localtune [serve] [--no-training] [options]   start the API server (the default command)
       localtune worker [options]                         validate and train jobs only, no HTTP (with --database-url: one of many nodes)
  --no-training (= --training false): this server runs no jobs; \`localtune worker\` nodes sharing its database do
options (each also an environment variable; flags win):
  ${configFlags.join('\n  ')}
  LOCALTUNE_DEVICE=auto|cpu|cuda (environment only) picks where models run; auto uses CUDA when its provider loads`;

const USAGE = `usage: localtune [serve] [options]           start the API server (default command; localtune serve --help)
       localtune worker [options]            train jobs from the shared queue, no HTTP (localtune serve --help lists the options)
       localtune demo [options]              tune the built-in model on a customer-support set and compare answers (localtune demo --help)
       localtune keys create|list|revoke     API keys (localtune keys --help)
       localtune models list                 base models found in the models directory, and skipped folders (localtune models --help)
       localtune models import DIR --base-model M   register a PEFT adapter trained elsewhere as an ft: model (on a running server)
       localtune export MODEL --format F     download a model as PEFT, merged, GGUF or GGUF LoRA (localtune export --help)
       localtune jobs list|show|events|cancel|pause|resume   fine-tuning jobs on a running server (localtune jobs --help)
       localtune engine …                    engine verification commands (localtune engine --help)
       localtune --help`;

/** `--no-training` is the one flag without a value. */
const configArgs = (args: string[]) => args.map((a) => (a === '--no-training' ? '--training=false' : a));

/** Runs a node until SIGINT or SIGTERM, then closes it (each job finishes its step and saves a resume point). */
async function untilStopped(node: Promise<{ close(): Promise<void> }>): Promise<void> {
  const running = await node;
  const stop = () => {
    running.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

const serve = (args: string[]) => untilStopped(startServer(loadConfig(configArgs(args))));

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === 'help' || first === '-h') return void (first === undefined ? serve(argv) : console.log(USAGE));
  if (first.startsWith('--')) return serve(argv);
  const help = wantsHelp(rest);
  switch (first) {
    case 'serve':
      return help ? console.log(SERVE_USAGE) : serve(rest);
    case 'worker':
      return help ? console.log(SERVE_USAGE) : untilStopped(startWorker(loadConfig(rest)));
    case 'demo':
      return help ? console.log(DEMO_USAGE) : demoCommand(rest);
    case 'keys':
      return help ? console.log(KEYS_USAGE) : keysCommand(rest);
    case 'models':
      return help ? console.log(MODELS_USAGE) : modelsCommand(rest);
    case 'jobs':
      return help ? console.log(JOBS_USAGE) : jobsCommand(rest);
    case 'export':
      return help ? console.log(EXPORT_USAGE) : exportCommand(rest);
    case 'engine': {
      process.exitCode = await (await import('./engine/train/verify-command.ts')).runEngineCommand(rest);
      return;
    }
    default:
      throw new ConfigError(`unknown command '${first}' (try --help)`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof MigrationError || err instanceof ApiRequestError) {
    console.error(`localtune: ${err.message}`);
  } else if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
    console.error(`localtune: ${(err as Error).message}: another process is using that port (choose one with --port or LOCALTUNE_PORT)`);
  } else {
    console.error(err);
  }
  process.exitCode = 1;
});
