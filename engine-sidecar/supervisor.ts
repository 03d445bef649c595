/**
 * Runs the engine as a child process and keeps it running.
 *
 * - Health: GET healthUrl every healthIntervalMs; a 2xx is healthy. An engine not healthy within startupTimeoutMs
 *   of its start, or unhealthy for unhealthyRestartMs after having been healthy (hung), is killed, which counts as
 *   a crash.
 * - Crashes: an engine that exits on its own is restarted after an exponential backoff (restartBackoffMs, doubled
 *   per consecutive crash, at most restartBackoffMaxMs). Crashes are consecutive until an engine stays up for
 *   stableMs; after maxRestarts consecutive restarts the supervisor gives up (state `failed`, onFailed): a pod
 *   whose engine cannot start is for the orchestrator to replace. Every exit is logged with its code or signal.
 * - Process group: the engine runs in its own process group (detached), so a Ctrl-C at the sidecar's terminal
 *   reaches only the sidecar, which drains before stopping the engine; and after the engine's main process has
 *   exited the group is SIGKILLed, so no worker of a crashed engine (vLLM's EngineCore, tensor-parallel workers)
 *   keeps its GPU memory across a restart.
 * - stop(): no more restarts, SIGTERM to the engine, SIGKILL to its group after stopTimeoutMs.
 *
 * Without a command the supervisor attaches to an engine something else runs (its own container, whose restarts
 * are the kubelet's): it health-checks it and reports its state, and starts, kills and restarts nothing.
 */

import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { request } from 'undici';

export type EngineState =
  /** Spawned, not yet healthy. */
  | 'starting'
  | 'healthy'
  /** Was healthy, its health check fails now. */
  | 'unhealthy'
  /** Exited; restarting after a delay. */
  | 'backoff'
  | 'stopping'
  | 'stopped'
  /** Gave up after too many consecutive restarts. */
  | 'failed';

export interface EngineExit {
  readonly pid: number | undefined;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** ms the process ran. */
  readonly uptimeMs: number;
  /** The spawn itself failed (command not found...). */
  readonly error?: string | undefined;
}

export interface SupervisorOptions {
  /** The engine command; undefined attaches to an engine run by something else (health checks only). */
  readonly command: string | undefined;
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Default 'inherit': the engine's output is the sidecar's. */
  readonly stdio?: StdioOptions;
  /** e.g. http://127.0.0.1:8000/health */
  readonly healthUrl: string;
  /** Default 1000. */
  readonly healthIntervalMs?: number;
  /** Default 2000 (at most the interval is not required). */
  readonly healthTimeoutMs?: number;
  /** From spawn to the first healthy check; default 900 000 (a large model loads for minutes). */
  readonly startupTimeoutMs?: number;
  /** Kill an engine unhealthy this long after having been healthy; 0 never. Default 60 000. */
  readonly unhealthyRestartMs?: number;
  /** Default 1000. */
  readonly restartBackoffMs?: number;
  /** Default 30 000. */
  readonly restartBackoffMaxMs?: number;
  /** Consecutive restarts before giving up. Default 5. */
  readonly maxRestarts?: number;
  /** Uptime after which an exit no longer counts as consecutive with the previous ones. Default 60 000. */
  readonly stableMs?: number;
  /** SIGTERM to SIGKILL on stop(). Default 10 000. */
  readonly stopTimeoutMs?: number;
  /** One line per lifecycle event. Default: stderr. */
  readonly log?: (line: string) => void;
  /** The engine turned healthy (pid undefined when attached). */
  readonly onHealthy?: (pid: number | undefined) => void;
  /** An engine process exited (a crash, a kill for health, or the stop). */
  readonly onExit?: (exit: EngineExit) => void;
  readonly onFailed?: (reason: string) => void;
}

export interface SupervisorStatus {
  readonly state: EngineState;
  /** No command: the engine is watched, not run. */
  readonly attached: boolean;
  /** The current engine process, while there is one. */
  readonly pid: number | undefined;
  /** Restarts since the supervisor started. */
  readonly restarts: number;
  readonly consecutiveRestarts: number;
  readonly lastExit: EngineExit | undefined;
  /** ms since epoch the current process started / first answered healthy. */
  readonly startedAt: number | undefined;
  readonly healthyAt: number | undefined;
}

export const SUPERVISOR_DEFAULTS = {
  healthIntervalMs: 1_000,
  healthTimeoutMs: 2_000,
  startupTimeoutMs: 900_000,
  unhealthyRestartMs: 60_000,
  restartBackoffMs: 1_000,
  restartBackoffMaxMs: 30_000,
  maxRestarts: 5,
  stableMs: 60_000,
  stopTimeoutMs: 10_000,
} as const;

/** The delay before the n-th consecutive restart (n >= 1). */
export function restartDelay(n: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, n - 1));
}

export class EngineSupervisor {
  readonly #opts: SupervisorOptions;
  readonly #t: { -readonly [K in keyof typeof SUPERVISOR_DEFAULTS]: number };
  readonly #log: (line: string) => void;
  #state: EngineState = 'stopped';
  #child: ChildProcess | undefined;
  #exited: Promise<EngineExit> | undefined;
  #restarts = 0;
  #consecutive = 0;
  #lastExit: EngineExit | undefined;
  #startedAt: number | undefined;
  #healthyAt: number | undefined;
  #unhealthySince: number | undefined;
  #healthTimer: NodeJS.Timeout | undefined;
  #checking = false;
  #backoffTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  #stopped: Promise<void> | undefined;
  #waiters = new Set<() => void>();

  constructor(opts: SupervisorOptions) {
    this.#opts = opts;
    const t = { ...SUPERVISOR_DEFAULTS };
    for (const key of Object.keys(t) as (keyof typeof SUPERVISOR_DEFAULTS)[]) {
      const v = opts[key];
      if (v === undefined) continue;
      if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`EngineSupervisor: ${key} must be a number >= 0, got ${v}`);
      t[key] = v as never;
    }
    if (t.healthIntervalMs <= 0) throw new RangeError('EngineSupervisor: healthIntervalMs must be > 0');
    this.#t = t;
    this.#log = opts.log ?? ((line) => console.error(line));
  }

  get state(): EngineState {
    return this.#state;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** No command: the engine is watched, not run. */
  get attached(): boolean {
    return this.#opts.command === undefined;
  }

  /** An engine process of ours is running, or (attached) the engine is someone else's to run. */
  get running(): boolean {
    return this.attached ? this.#state !== 'stopped' : this.#child !== undefined;
  }

  status(): SupervisorStatus {
    return {
      state: this.#state,
      attached: this.attached,
      pid: this.#child?.pid,
      restarts: this.#restarts,
      consecutiveRestarts: this.#consecutive,
      lastExit: this.#lastExit,
      startedAt: this.#startedAt,
      healthyAt: this.#healthyAt,
    };
  }

  /** Spawns the engine and starts health checks. */
  start(): void {
    if (this.#healthTimer !== undefined) throw new Error('EngineSupervisor: already started');
    this.#healthTimer = setInterval(() => void this.#check(), this.#t.healthIntervalMs);
    if (this.attached) {
      this.#startedAt = Date.now();
      this.#setState('starting');
      this.#log(`no engine command: watching the engine at ${this.#opts.healthUrl} (no starts, no restarts)`);
      return;
    }
    this.#spawn();
  }

  /** Resolves true once the engine is healthy, false after timeoutMs or when the supervisor stops or fails. */
  waitHealthy(timeoutMs: number): Promise<boolean> {
    if (this.#state === 'healthy') return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve(this.#state === 'healthy');
      };
      const timer = setTimeout(done, timeoutMs);
      this.#waiters.add(done);
    });
  }

  /** No more restarts; SIGTERM, then SIGKILL to the process group after stopTimeoutMs. Idempotent. */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#backoffTimer);
    clearInterval(this.#healthTimer);
    const child = this.#child;
    const exited = this.#exited;
    if (child === undefined || exited === undefined) {
      if (this.#state !== 'failed') this.#setState('stopped');
      return;
    }
    this.#setState('stopping');
    this.#log(`stopping engine pid ${child.pid} (SIGTERM, SIGKILL after ${this.#t.stopTimeoutMs} ms)`);
    signal(child, 'SIGTERM');
    const killTimer = setTimeout(() => {
      this.#log(`engine pid ${child.pid} still running ${this.#t.stopTimeoutMs} ms after SIGTERM: SIGKILL`);
      killGroup(child);
    }, this.#t.stopTimeoutMs);
    try {
      await exited;
    } finally {
      clearTimeout(killTimer);
    }
    this.#setState('stopped');
  }

  #spawn(): void {
    const command = this.#opts.command!;
    const startedAt = Date.now();
    let child: ChildProcess;
    try {
      child = spawn(command, [...(this.#opts.args ?? [])], {
        stdio: this.#opts.stdio ?? 'inherit',
        env: this.#opts.env ?? process.env,
        cwd: this.#opts.cwd,
        detached: true,
      });
    } catch (err) {
      this.#onExit(undefined, { pid: undefined, code: null, signal: null, uptimeMs: 0, error: (err as Error).message });
      return;
    }
    this.#child = child;
    this.#startedAt = startedAt;
    this.#healthyAt = undefined;
    this.#unhealthySince = undefined;
    this.#setState('starting');
    this.#log(`engine started: pid ${child.pid ?? '?'}: ${[command, ...(this.#opts.args ?? [])].join(' ')}`);
    this.#exited = new Promise<EngineExit>((resolve) => {
      let settled = false;
      const settle = (exit: EngineExit): void => {
        if (settled) return;
        settled = true;
        resolve(exit);
        this.#onExit(child, exit);
      };
      child.once('error', (err) => settle({ pid: child.pid, code: null, signal: null, uptimeMs: Date.now() - startedAt, error: err.message }));
      child.once('exit', (code, sig) => settle({ pid: child.pid, code, signal: sig, uptimeMs: Date.now() - startedAt }));
    });
  }

  #onExit(child: ChildProcess | undefined, exit: EngineExit): void {
    if (child !== undefined && this.#child !== child) return;
    this.#child = undefined;
    this.#lastExit = exit;
    // Workers the engine's main process left behind (it was killed, or crashed).
    if (child !== undefined) killGroup(child);
    this.#opts.onExit?.(exit);
    const how = exit.error !== undefined ? `failed to run (${exit.error})` : exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
    if (this.#stopping) {
      this.#log(`engine pid ${exit.pid} ${how} after stop`);
      return;
    }
    const stayedUp = this.#healthyAt !== undefined && Date.now() - this.#healthyAt >= this.#t.stableMs;
    if (stayedUp) this.#consecutive = 0;
    this.#consecutive++;
    if (this.#consecutive > this.#t.maxRestarts) {
      const reason = `engine pid ${exit.pid} ${how} after ${exit.uptimeMs} ms; giving up after ${this.#t.maxRestarts} consecutive restarts`;
      this.#log(reason);
      clearInterval(this.#healthTimer);
      this.#setState('failed');
      this.#opts.onFailed?.(reason);
      return;
    }
    const delay = restartDelay(this.#consecutive, this.#t.restartBackoffMs, this.#t.restartBackoffMaxMs);
    this.#log(`engine pid ${exit.pid} ${how} after ${exit.uptimeMs} ms; restart ${this.#consecutive}/${this.#t.maxRestarts} in ${delay} ms`);
    this.#setState('backoff');
    this.#backoffTimer = setTimeout(() => {
      if (this.#stopping) return;
      this.#restarts++;
      this.#spawn();
    }, delay);
  }

  async #check(): Promise<void> {
    if (this.attached) return this.#checkAttached();
    const child = this.#child;
    if (this.#checking || child === undefined || this.#stopping) return;
    this.#checking = true;
    const healthy = await this.#probe();
    this.#checking = false;
    // The process may have exited (or been replaced) while the check was in flight.
    if (child !== this.#child || this.#stopping) return;
    const now = Date.now();
    if (healthy) {
      this.#unhealthySince = undefined;
      if (this.#state !== 'healthy') {
        this.#healthyAt ??= now;
        this.#setState('healthy');
        this.#log(`engine pid ${child.pid} healthy after ${now - (this.#startedAt ?? now)} ms`);
        this.#opts.onHealthy?.(child.pid);
      }
      return;
    }
    if (this.#state === 'starting') {
      if (now - (this.#startedAt ?? now) >= this.#t.startupTimeoutMs) {
        this.#log(`engine pid ${child.pid} not healthy within ${this.#t.startupTimeoutMs} ms of its start: killing it`);
        killGroup(child);
      }
      return;
    }
    if (this.#state === 'healthy') {
      this.#unhealthySince = now;
      this.#setState('unhealthy');
      this.#log(`engine pid ${child.pid} health check failed`);
    }
    if (this.#state === 'unhealthy' && this.#t.unhealthyRestartMs > 0 && now - (this.#unhealthySince ?? now) >= this.#t.unhealthyRestartMs) {
      this.#log(`engine pid ${child.pid} unhealthy for ${this.#t.unhealthyRestartMs} ms: killing it`);
      killGroup(child);
    }
  }

  async #checkAttached(): Promise<void> {
    if (this.#checking || this.#stopping) return;
    this.#checking = true;
    const healthy = await this.#probe();
    this.#checking = false;
    if (this.#stopping) return;
    if (healthy && this.#state !== 'healthy') {
      this.#healthyAt ??= Date.now();
      this.#setState('healthy');
      this.#log(`engine at ${this.#opts.healthUrl} healthy`);
      this.#opts.onHealthy?.(undefined);
    } else if (!healthy && this.#state === 'healthy') {
      this.#setState('unhealthy');
      this.#log(`engine at ${this.#opts.healthUrl} health check failed`);
    }
  }

  async #probe(): Promise<boolean> {
    try {
      const res = await request(this.#opts.healthUrl, { method: 'GET', signal: AbortSignal.timeout(this.#t.healthTimeoutMs) });
      await res.body.dump();
      return res.statusCode >= 200 && res.statusCode < 300;
    } catch {
      return false;
    }
  }

  #setState(state: EngineState): void {
    this.#state = state;
    for (const waiter of [...this.#waiters]) {
      if (state === 'healthy' || state === 'stopped' || state === 'failed' || state === 'stopping') waiter();
    }
  }
}

function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    child.kill(sig);
  } catch {
    // already gone
  }
}

/** SIGKILL to the engine's process group (its pid: it was spawned detached); ESRCH when nothing is left. */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    signal(child, 'SIGKILL');
  }
}
