// localtune command line: `localtune [serve]`, `localtune keys …`, `localtune engine …`.
const [command = 'serve'] = process.argv.slice(2);

switch (command) {
  case '--help':
  case 'help':
    console.log('usage: localtune [serve] [--host H] [--port P] [--data-dir D] [--models-dir M]');
    break;
  case 'engine':
    process.exitCode = await (await import('./engine/train/verify-command.ts')).runEngineCommand(process.argv.slice(3));
    break;
  default:
    console.error(`localtune: unknown command '${command}' (try --help)`);
    process.exitCode = 2;
}
