// Command-line argument helpers shared by the subcommands: options are taken out of the list, what remains is positional.
import { ConfigError } from '../config.ts';

/** Removes `--name value` / `--name=value` from args and returns the value. */
export function takeOption(args: string[], name: string): string | undefined {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const [arg] = args.splice(i, 1);
  if (arg!.includes('=')) return arg!.slice(name.length + 1);
  const [value] = args.splice(i, 1);
  if (value === undefined) throw new ConfigError(`option '${name}' needs a value`);
  return value;
}

/** Removes a boolean `--name` from args and says whether it was there. */
export function takeFlag(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i < 0) return false;
  args.splice(i, 1);
  return true;
}

/** Whether args ask for help (`--help`, `-h`), so every subcommand answers it the same way. */
export function wantsHelp(args: readonly string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}

/** Fails on anything left over, so a typo never passes silently. */
export function rejectExtra(args: readonly string[], command: string): void {
  if (args.length) throw new ConfigError(`${command}: unexpected arguments: ${args.join(' ')} (try ${command} --help)`);
}
