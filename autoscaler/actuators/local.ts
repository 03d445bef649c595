import { spawn, type ChildProcess } from 'node:child_process';
import type { Actuator } from '../actuator.js';

/** One replica as the router sees it. */
export interface LocalReplica {
  /** 0-based slot; a replica started after a lower slot was freed takes that slot (and its ports) again. */
  readonly index: number;
  /** basePort + 2 * index: the sidecar's port in the default template. */
  readonly port: number;
  /** basePort + 2 * index + 1: the engine's port. */
  readonly enginePort: number;
  /** The engine's base URL, http://<host>:<enginePort>: what the router sends requests to. */
  readonly url: string;
  readonly pid: number;
}

export interface LocalActuatorOptions {
  /**
   * argv of one replica; `{port}`, `{enginePort}`, `{index}` and `{host}` are replaced in every element, e.g.
   * `['node', 'dist/cli/main.js', 'sidecar', '--engine', 'sim', '--engine-port', '{enginePort}', '--port', '{port}',
   * '--register', '--', 'node', 'dist/cli/main.js', 'sim', '--port', '{enginePort}', '--model', 'M']`.
   */
  readonly command: readonly string[];
  /** Replica i gets port basePort + 2i and enginePort basePort + 2i + 1. */
  readonly basePort: number;
  /** Host in the replicas' URLs and `{host}`. Default 127.0.0.1. */
  readonly host?: string;
  readonly cwd?: string;
  /** Added to this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** After SIGTERM, how long a replica may take to exit before SIGKILL. Default 10,000 ms. */
  readonly stopTimeoutMs?: number;
  /** Upper bound on replicas, a guard against a runaway decision. Default 64. */
  readonly maxReplicas?: number;
  /** The children's stdout and stderr: 'stderr' (default) drops stdout and passes stderr through. */
  readonly output?: 'inherit' | 'ignore' | 'stderr';
  /** The live replicas after every change: started, stopped, or exited on their own. Must not throw. */
  readonly onChange?: (replicas: readonly LocalReplica[]) => void;
  /** A replica exited without being asked to (crash, port in use). Must not throw. */
  readonly onExit?: (replica: LocalReplica, code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface LocalActuator extends Actuator {
  /** The live replicas (started and not asked to stop), by index. */
  replicas(): readonly LocalReplica[];
  /** Resolves once every replica asked to stop so far has exited. */
  settled(): Promise<void>;
}

interface Child {
  replica: LocalReplica;
  process: ChildProcess;
  exited: Promise<void>;
  stopping: boolean;
}

const PLACEHOLDER = /\{(port|enginePort|index|host)\}/g;

/**
 * Replicas as child processes of this one, for `switchyard dev --autoscale` and tests: scaling up starts more
 * from the command template, scaling down stops the newest (highest index) with SIGTERM, then SIGKILL after
 * stopTimeoutMs. scale() resolves once new children are spawned and the removed ones signalled, as a
 * Deployment's scale is accepted before its pods come or go; settled() waits for the exits.
 *
 * currentReplicas() counts live children not asked to stop. A child that exits on its own is not restarted:
 * the count drops and the autoscaler's next decision brings it back. The target name is not used: one local
 * actuator runs one pool of replicas.
 */
export function localActuator(opts: LocalActuatorOptions): LocalActuator {
  if (opts.command.length === 0 || opts.command[0] === '') throw new Error('local actuator: command must not be empty');
  if (!Number.isInteger(opts.basePort) || opts.basePort < 1 || opts.basePort > 65534) throw new RangeError(`local actuator: basePort must be an integer in 1..65534, got ${opts.basePort}`);
  const host = opts.host ?? '127.0.0.1';
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  const maxReplicas = opts.maxReplicas ?? 64;
  if (!Number.isInteger(maxReplicas) || maxReplicas < 0) throw new RangeError(`local actuator: maxReplicas must be a non-negative integer, got ${maxReplicas}`);
  const maxByPorts = Math.floor((65535 - opts.basePort + 1) / 2);
  const limit = Math.min(maxReplicas, maxByPorts);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const output = opts.output ?? 'stderr';
  const stdio: ('ignore' | 'inherit')[] = output === 'inherit' ? ['ignore', 'inherit', 'inherit'] : output === 'ignore' ? ['ignore', 'ignore', 'ignore'] : ['ignore', 'ignore', 'inherit'];

  /** Live children not asked to stop, by index. */
  const live = new Map<number, Child>();
  /** Every child that has not exited yet, stopping ones included. */
  const running = new Set<Child>();
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;
  let closing: Promise<void> | undefined;

  const list = (): LocalReplica[] => Array.from(live.values(), (c) => c.replica).sort((a, b) => a.index - b.index);
  const changed = (): void => opts.onChange?.(list());

  // A parent that exits without close() (an uncaught error) must not leave engines running on its ports.
  const onParentExit = (): void => {
    for (const c of running) c.process.kill('SIGKILL');
  };
  process.on('exit', onParentExit);

  const start = (index: number): Child => {
    const port = opts.basePort + 2 * index;
    const enginePort = port + 1;
    const values: Record<string, string> = { port: String(port), enginePort: String(enginePort), index: String(index), host };
    const argv = opts.command.map((arg) => arg.replace(PLACEHOLDER, (_, key: string) => values[key]!));
    const proc = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio });
    const replica: LocalReplica = { index, port, enginePort, url: `http://${urlHost}:${enginePort}`, pid: proc.pid ?? -1 };
    let resolveExit!: () => void;
    const child: Child = { replica, process: proc, exited: new Promise<void>((r) => (resolveExit = r)), stopping: false };
    const onGone = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (!running.delete(child)) return;
      resolveExit();
      if (!child.stopping && live.get(index) === child) {
        live.delete(index);
        opts.onExit?.(replica, code, signal);
        changed();
      }
    };
    proc.once('exit', onGone);
    // spawn failures (ENOENT, EACCES) arrive as 'error' without 'exit'.
    proc.once('error', () => onGone(proc.exitCode, proc.signalCode));
    running.add(child);
    live.set(index, child);
    return child;
  };

  const stop = (child: Child): void => {
    child.stopping = true;
    live.delete(child.replica.index);
    if (!running.has(child)) return;
    child.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (running.has(child)) child.process.kill('SIGKILL');
    }, stopTimeoutMs);
    timer.unref();
    void child.exited.then(() => clearTimeout(timer));
  };

  const setReplicas = async (replicas: number): Promise<void> => {
    if (closed) throw new Error('local actuator: closed');
    let delta = replicas - live.size;
    if (delta === 0) return;
    if (delta > 0) {
      const spawned: Child[] = [];
      for (let index = 0; delta > 0; index++) {
        if (live.has(index)) continue;
        // A slot whose previous child is still stopping keeps its ports until it exits.
        const old = [...running].find((c) => c.replica.index === index);
        if (old !== undefined) await old.exited;
        spawned.push(start(index));
        delta--;
      }
      await Promise.all(spawned.map((c) => waitSpawned(c.process)));
    } else {
      const newest = list().slice(delta);
      for (const r of newest) stop(live.get(r.index)!);
    }
    changed();
  };

  return {
    kind: 'local',

    async currentReplicas(): Promise<number> {
      return live.size;
    },

    scale(_target: string, replicas: number): Promise<void> {
      if (!Number.isInteger(replicas) || replicas < 0) return Promise.reject(new RangeError(`local actuator: replicas must be a non-negative integer, got ${replicas}`));
      if (replicas > limit) return Promise.reject(new RangeError(`local actuator: ${replicas} replicas exceed the limit of ${limit} (maxReplicas, or ports from ${opts.basePort})`));
      // One change at a time: two overlapping calls must not both start the same slot.
      const run = queue.then(() => setReplicas(replicas));
      queue = run.catch(() => undefined);
      return run;
    },

    replicas: list,

    async settled(): Promise<void> {
      await Promise.all(Array.from(running, (c) => (c.stopping ? c.exited : undefined)));
    },

    close(): Promise<void> {
      closing ??= (async () => {
        await queue;
        closed = true;
        const had = live.size > 0;
        for (const c of [...live.values()]) stop(c);
        if (had) changed();
        await Promise.all(Array.from(running, (c) => c.exited));
        process.off('exit', onParentExit);
      })();
      return closing;
    },
  };
}

/** Resolves once the process is spawned, rejects when it could not be (bad executable, cwd). */
function waitSpawned(proc: ChildProcess): Promise<void> {
  if (proc.pid !== undefined) return Promise.resolve();
  return new Promise((resolve, reject) => {
    proc.once('spawn', () => resolve());
    proc.once('error', (err) => reject(new Error(`local actuator: cannot start ${proc.spawnfile}: ${err.message}`, { cause: err })));
  });
}
