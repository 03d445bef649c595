import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Flags of one command. `--help` prints the command's help and exits 0; a bad flag names itself on stderr and
 * exits 2, as command-line tools do.
 */
export function parseCommandArgs<O extends Options>(command: string, help: string, options: O, argv: string[]) {
  try {
    const parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: false, strict: true });
    if ((parsed.values as Record<string, unknown>).help === true) {
      console.log(help);
      process.exit(0);
    }
    return parsed.values as ReturnType<typeof parseArgs<{ options: O }>>['values'];
  } catch (err) {
    return usageError(command, (err as Error).message, help);
  }
}

/** Names the problem on stderr, followed by the command's help when given, and exits 2. */
export function usageError(command: string, message: string, help?: string): never {
  console.error(help === undefined ? `switchyard ${command}: ${message}` : `switchyard ${command}: ${message}\n\n${help}`);
  process.exit(2);
}

/** A numeric flag, or exit 2 naming it. */
export function numberFlag(command: string, flag: string, value: string | undefined, fallback: number, check: (n: number) => boolean): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !check(n)) usageError(command, `--${flag} ${JSON.stringify(value)} is not valid`);
  return n;
}

/** Resolves when the process is asked to stop (Ctrl-C or a supervisor's SIGTERM). */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
