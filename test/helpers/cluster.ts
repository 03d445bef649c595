import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadConfig, mergeDeep, type Config } from '../../core/config.js';
import type { EngineSpec } from '../../core/engine.js';
import { startSim, type RunningSim, type SimOptions } from '../../engine-sim/server.js';
import { configKeyResolver } from '../../router/auth.js';
import type { SqlClient } from '../../core/db/sql-client.js';
import { createGateway, type Gateway, type GatewayOptions } from '../../router/server.js';

export const testKey = 'sk-test-0123456789abcdef';
export const testModel = 'test-model';

const cliPath = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface Cluster {
  readonly url: string;
  readonly gateway: Gateway;
  readonly sims: RunningSim[];
  close(): Promise<void>;
}

/** A gateway in this process in front of `engines` simulated engines, each its own server on 127.0.0.1. */
export async function startCluster(opts: {
  engines?: number;
  sim?: Partial<SimOptions>;
  config?: Record<string, unknown>;
  /** A control-plane database and admin key; default none (config keys only, no /admin). */
  controlPlane?: ControlPlaneOptions;
}): Promise<Cluster> {
  const sims: RunningSim[] = [];
  for (let i = 0; i < (opts.engines ?? 2); i++) sims.push(await startSim({ model: testModel, port: 0, timeScale: 50, seed: i, ...opts.sim }));
  const engines: EngineSpec[] = sims.map((s, i) => ({ id: `sim-${i}`, url: s.url, kind: 'vllm', models: [s.model], labels: { pool: 'default' } }));
  const gateway = await startGateway(engines, opts.config, opts.controlPlane);
  const url = await gateway.listen();
  return {
    url,
    gateway,
    sims,
    async close() {
      await gateway.close();
      await Promise.all(sims.map((s) => s.close()));
    },
  };
}

/** A gateway on an ephemeral port in front of the given engines; fast health checks for tests. */
export interface ControlPlaneOptions {
  db: SqlClient;
  adminKey?: string;
}

export async function startGateway(
  engines: EngineSpec[],
  overrides: Record<string, unknown> = {},
  controlPlane?: ControlPlaneOptions,
  extra: Pick<GatewayOptions, 'kubeConfig'> = {},
): Promise<Gateway> {
  const config: Config = loadConfig({
    env: {},
    base: mergeDeep(
      {
        server: { port: 0 },
        auth: { keys: [{ principal: 'test', env: 'TEST_KEY' }] },
        engines,
        health: { intervalMs: 200, timeoutMs: 500 },
        scrape: { intervalMs: 200 },
        log: { level: 'silent' },
      },
      overrides,
    ),
  });
  return await createGateway({
    config,
    resolver: configKeyResolver(config.auth.keys, { TEST_KEY: testKey }),
    db: controlPlane?.db ?? null,
    adminKey: controlPlane?.adminKey,
    ...extra,
  });
}

export interface SimProcess {
  readonly url: string;
  readonly child: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A simulated engine in its own process (the compiled CLI), for tests that kill it. */
export async function spawnSim(args: string[]): Promise<SimProcess> {
  const child = spawn(process.execPath, [cliPath, 'sim', '--port', '0', '--model', testModel, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('sim did not start within 10 s')), 10_000);
    child.once('exit', (code) => reject(new Error(`sim exited with ${code} before listening`)));
    lines.on('line', (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
  return {
    url,
    child,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await once(child, 'exit');
    },
  };
}

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${testKey}`, 'content-type': 'application/json', ...extra };
}

export function chatBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: testModel, messages: [{ role: 'user', content: 'Hello there, how are you today?' }], max_tokens: 8, ...extra });
}

/** Reads a Prometheus series value from a /metrics text, summing all label sets that contain `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([^\s{]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null || m[1] !== name) continue;
    const labelText = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}
