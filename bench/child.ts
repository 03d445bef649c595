import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

/**
 * Servers a bench starts as separate processes: each announces its URL on one stdout line, and its CPU time is
 * read from /proc so the load generator's own work never counts against it.
 */

export interface Service {
  readonly name: string;
  readonly url: string;
  readonly pid: number;
  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Flags for node itself, e.g. --cpu-prof. */
  readonly nodeArgs?: readonly string[];
  /** CPU list for taskset (e.g. "1" or "0-2"), so the process and all its threads stay off the others' cores. */
  readonly cpus?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

const live = new Set<ChildProcess>();
// Whatever way the bench ends (error, Ctrl-C, process.exit), no server it started outlives it.
process.on('exit', () => {
  for (const child of live) child.kill('SIGTERM');
});

/** Runs `node script ...args` and resolves once a stdout line matches `listening`, whose first group is the URL. */
export function startService(name: string, script: string, args: readonly string[], listening: RegExp, opts: StartOptions = {}): Promise<Service> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const command = [process.execPath, ...(opts.nodeArgs ?? []), script, ...args];
  // taskset execs the command, so the pid stays that of the node process.
  const [file, ...argv] = opts.cpus === undefined ? command : ['taskset', '-c', opts.cpus, ...command];
  const child = spawn(file!, argv, {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...opts.env },
  });
  live.add(child);
  let stopping = false;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  return new Promise((resolve, reject) => {
    let url: string | undefined;
    const fail = (err: Error) => {
      clearTimeout(timer);
      child.kill('SIGTERM');
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`${name}: no listening line within ${timeoutMs} ms`)), timeoutMs);
    child.once('error', fail);
    child.once('exit', (code, signal) => {
      live.delete(child);
      if (url === undefined) fail(new Error(`${name} exited (${code ?? signal}) before listening`));
      else if (!stopping) process.stderr.write(`[${name}] exited unexpectedly (${code ?? signal})\n`);
    });
    // Later lines (warnings, errors) are passed on: a bench that hides its servers' complaints lies.
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = url === undefined ? listening.exec(line) : null;
      if (match === null) {
        process.stderr.write(`[${name}] ${line}\n`);
        return;
      }
      url = match[1]!;
      clearTimeout(timer);
      resolve({
        name,
        url,
        pid: child.pid!,
        async stop() {
          stopping = true;
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(killer);
        },
      });
    });
  });
}

// USER_HZ: the unit of utime/stime in /proc; 100 on every common Linux, but asking costs nothing.
const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** CPU seconds (user + system, all threads) a process has used so far. Linux only. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces, so count from after it:
  // state is field 3, utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** Moves this process (all its threads) onto the given CPUs. */
export function pinSelf(cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
}
