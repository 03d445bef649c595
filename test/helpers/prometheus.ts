/**
 * A real Prometheus server (Debian's `prometheus` package; .ci/run installs it) on loopback, for tests that read
 * engines' metrics through PromQL. Its scrape targets come from a file_sd JSON file the test rewrites as engines
 * come and go (sync()), so replicas started by an actuator are scraped within about a scrape interval.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';

/** The `prometheus` binary is on PATH. */
export const prometheusAvailable: boolean = spawnSync('prometheus', ['--version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;

export interface PrometheusOptions {
  /** Scrape (and file_sd refresh) interval. Default 500 ms. */
  readonly scrapeIntervalMs?: number;
  /** host:port of every engine to scrape (its /metrics); read at start and on every sync(). */
  readonly targets: () => readonly string[];
  /** Label put on every target (so queries can select this test's series). Default job "engines". */
  readonly job?: string;
  /** How long to wait for /-/ready. Default 20 s. */
  readonly readyTimeoutMs?: number;
}

export interface RunningPrometheus {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly child: ChildProcess;
  /** Rewrites the targets file from targets() (atomically: write, then rename). */
  sync(): void;
  /** The answer of an instant query (data.result), for assertions and debugging. */
  query(promql: string): Promise<unknown>;
  /** Kills the server and removes its directory. */
  stop(): Promise<void>;
}

export async function startPrometheus(opts: PrometheusOptions): Promise<RunningPrometheus> {
  const intervalMs = opts.scrapeIntervalMs ?? 500;
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-prometheus-'));
  const targetsFile = join(dir, 'targets.json');
  const sync = (): void => {
    const tmp = `${targetsFile}.tmp`;
    writeFileSync(tmp, JSON.stringify([{ targets: [...opts.targets()], labels: {} }]));
    renameSync(tmp, targetsFile);
  };
  sync();
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      `  scrape_interval: ${intervalMs}ms`,
      `  scrape_timeout: ${intervalMs}ms`,
      `  evaluation_interval: ${intervalMs}ms`,
      'scrape_configs:',
      `  - job_name: ${JSON.stringify(opts.job ?? 'engines')}`,
      '    file_sd_configs:',
      `      - files: [${JSON.stringify(targetsFile)}]`,
      `        refresh_interval: ${intervalMs}ms`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const exited = once(child, 'exit');

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitReady(url, child, opts.readyTimeoutMs ?? 20_000);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    url,
    child,
    sync,
    async query(promql) {
      const res = await request(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`, { signal: AbortSignal.timeout(5_000) });
      const body = (await res.body.json()) as { data?: { result?: unknown } };
      return body.data?.result;
    },
    stop,
  };
}

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`prometheus exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    try {
      const res = await request(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) });
      await res.body.dump();
      if (res.statusCode === 200) return;
      last = `HTTP ${res.statusCode}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`prometheus at ${url} not ready within ${timeoutMs} ms (${last})`);
}

/** A port free on 127.0.0.1 just now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
