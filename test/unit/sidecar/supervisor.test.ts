import { createServer } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EngineSupervisor, restartDelay, type SupervisorOptions } from '../../../engine-sidecar/supervisor.js';

// Engines here are tiny node scripts: an HTTP server whose /health answers `HEALTH`, exiting with `EXIT_CODE`
// after `EXIT_AFTER_MS` when set, ignoring SIGTERM when `IGNORE_TERM` is set.
const ENGINE = `
const http = require('node:http');
const { PORT, HEALTH = '200', EXIT_AFTER_MS, EXIT_CODE = '3', IGNORE_TERM } = process.env;
if (IGNORE_TERM) process.on('SIGTERM', () => {});
http.createServer((req, res) => { res.statusCode = req.url === '/health' ? Number(HEALTH) : 404; res.end(); }).listen(Number(PORT), '127.0.0.1');
if (EXIT_AFTER_MS) setTimeout(() => process.exit(Number(EXIT_CODE)), Number(EXIT_AFTER_MS));
`;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const running: EngineSupervisor[] = [];

async function supervise(env: Record<string, string>, opts: Partial<SupervisorOptions> = {}): Promise<{ supervisor: EngineSupervisor; lines: string[] }> {
  const port = await freePort();
  const lines: string[] = [];
  const supervisor = new EngineSupervisor({
    command: process.execPath,
    args: ['-e', ENGINE],
    env: { ...process.env, PORT: String(port), ...env },
    stdio: 'ignore',
    healthUrl: `http://127.0.0.1:${port}/health`,
    healthIntervalMs: 50,
    healthTimeoutMs: 500,
    restartBackoffMs: 50,
    stopTimeoutMs: 2_000,
    log: (line) => lines.push(line),
    ...opts,
  });
  running.push(supervisor);
  supervisor.start();
  return { supervisor, lines };
}

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});

describe('restartDelay', () => {
  it('doubles per consecutive restart up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => restartDelay(n, 1000, 30_000))).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  });
});

describe('EngineSupervisor', () => {
  it('starts the engine and reports it healthy, then stops it with SIGTERM', async () => {
    const { supervisor, lines } = await supervise({});
    expect(await supervisor.waitHealthy(10_000)).toBe(true);
    const pid = supervisor.pid!;
    expect(pid).toBeGreaterThan(0);
    await supervisor.stop();
    expect(supervisor.state).toBe('stopped');
    expect(supervisor.status().lastExit).toMatchObject({ pid, signal: 'SIGTERM' });
    expect(lines.join('\n')).toContain(`engine pid ${pid} healthy`);
  });

  it('restarts an engine that exits, logging the exit code, and gives up after maxRestarts consecutive restarts', async () => {
    const failed = vi.fn();
    const { supervisor, lines } = await supervise({ EXIT_AFTER_MS: '150', EXIT_CODE: '3' }, { maxRestarts: 2, onFailed: failed });
    await vi.waitFor(() => expect(supervisor.state).toBe('failed'), { timeout: 10_000, interval: 20 });
    expect(failed).toHaveBeenCalledOnce();
    expect(supervisor.status()).toMatchObject({ restarts: 2, pid: undefined, lastExit: { code: 3 } });
    const log = lines.join('\n');
    expect(log).toMatch(/exited with code 3 after \d+ ms; restart 1\/2 in 50 ms/);
    expect(log).toMatch(/exited with code 3 after \d+ ms; restart 2\/2 in 100 ms/);
    expect(log).toMatch(/giving up after 2 consecutive restarts/);
  });

  it('SIGKILLs an engine that ignores SIGTERM after stopTimeoutMs', async () => {
    const { supervisor } = await supervise({ IGNORE_TERM: '1' }, { stopTimeoutMs: 300 });
    expect(await supervisor.waitHealthy(10_000)).toBe(true);
    const started = Date.now();
    await supervisor.stop();
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(supervisor.status().lastExit?.signal).toBe('SIGKILL');
  });

  it('kills an engine that is not healthy within the startup timeout, and counts it as a crash', async () => {
    const { supervisor, lines } = await supervise({ HEALTH: '503' }, { startupTimeoutMs: 300, maxRestarts: 0 });
    await vi.waitFor(() => expect(supervisor.state).toBe('failed'), { timeout: 10_000, interval: 20 });
    expect(lines.join('\n')).toContain('not healthy within 300 ms');
    expect(supervisor.status().lastExit?.signal).toBe('SIGKILL');
  });

  it('kills an engine that stays unhealthy after having been healthy, then restarts it', async () => {
    const { supervisor, lines } = await supervise({}, { unhealthyRestartMs: 200 });
    expect(await supervisor.waitHealthy(10_000)).toBe(true);
    const first = supervisor.pid!;
    // Stop the engine's answers without ending the process: a hung engine.
    process.kill(first, 'SIGSTOP');
    try {
      await vi.waitFor(() => expect(supervisor.status().restarts).toBe(1), { timeout: 10_000, interval: 20 });
    } finally {
      try {
        process.kill(first, 'SIGCONT');
      } catch {
        // killed, as expected
      }
    }
    expect(await supervisor.waitHealthy(10_000)).toBe(true);
    expect(supervisor.pid).not.toBe(first);
    expect(lines.join('\n')).toContain(`engine pid ${first} unhealthy for 200 ms: killing it`);
  });

  it('reports a command that cannot run as a failed start', async () => {
    const lines: string[] = [];
    const supervisor = new EngineSupervisor({ command: '/nonexistent/engine', healthUrl: 'http://127.0.0.1:1/health', maxRestarts: 0, log: (l) => lines.push(l), stdio: 'ignore' });
    running.push(supervisor);
    supervisor.start();
    await vi.waitFor(() => expect(supervisor.state).toBe('failed'), { timeout: 5_000, interval: 20 });
    expect(lines.join('\n')).toMatch(/failed to run \(.*ENOENT/);
  });
});
