import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * `switchyard serve` as a child process of the test, for tests that need several real gateway replicas (each its
 * own event loop, Redis connections, database pool and usage writer) rather than gateways sharing the test's process.
 * The config is written to a temp file as JSON (which is YAML). Children still alive when the test process exits
 * (a crash before afterAll) are killed on the way out.
 */

const cliPath = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** Env variables that override config fields (core/config.ts) or turn on telemetry: never inherited from the test run. */
const overridingEnv = ['PORT', 'SWITCHYARD_HOST', 'SWITCHYARD_LOG_LEVEL', 'SWITCHYARD_ROUTING_POLICY', 'SWITCHYARD_CONFIG', 'REDIS_URL', 'DATABASE_URL'];

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kills `child` with SIGKILL if it is still running when this process exits. */
export function killOnExit(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

export interface GatewayProcess {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly child: ChildProcess;
  /** The last lines the process wrote (stdout and stderr), for failure messages. */
  output(): string;
  /** SIGTERM (the gateway flushes its usage rows and closes), then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnGatewayOptions {
  /** The whole config; `server.port` should be 0. */
  config: Record<string, unknown>;
  /** Added to the inherited environment (after removing the variables that override config fields). */
  env?: Record<string, string>;
  /** Default 20 s. */
  startTimeoutMs?: number;
  /** Lines of output kept; default 300. */
  keepLines?: number;
}

export async function spawnGateway(opts: SpawnGatewayOptions): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-gw-'));
  const configPath = join(dir, 'switchyard.yaml');
  writeFileSync(configPath, JSON.stringify(opts.config, null, 2));
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of overridingEnv) delete env[name];
  for (const name of Object.keys(env)) if (name.startsWith('OTEL_')) delete env[name];
  Object.assign(env, opts.env);

  const child = spawn(process.execPath, [cliPath, 'serve', '--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(child);
  child.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const keep = opts.keepLines ?? 300;
  const lines: string[] = [];
  const remember = (line: string) => {
    lines.push(line);
    if (lines.length > keep) lines.shift();
  };
  createInterface({ input: child.stderr! }).on('line', remember);
  const stdout = createInterface({ input: child.stdout! });
  const output = () => lines.join('\n');

  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`gateway did not start within ${opts.startTimeoutMs ?? 20_000} ms:\n${output()}`)), opts.startTimeoutMs ?? 20_000);
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => fail(new Error(`gateway exited (${code ?? signal}) before listening:\n${output()}`));
    function fail(err: Error): void {
      clearTimeout(timer);
      child.off('exit', onExit);
      child.kill('SIGKILL');
      reject(err);
    }
    child.once('exit', onExit);
    stdout.on('line', (line) => {
      remember(line);
      const m = /^switchyard gateway listening on (http:\/\/\S+)/.exec(line);
      if (m !== null) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve(m[1]!);
      }
    });
  });

  return {
    url,
    child,
    output,
    async stop(graceMs = 8_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
