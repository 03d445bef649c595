import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { localActuator, type LocalActuator, type LocalReplica } from '../../../autoscaler/actuators/local.js';
import { findFreePortRange } from './ports.js';

const cliPath = fileURLToPath(new URL('../../../dist/cli/main.js', import.meta.url));
const model = 'test-model';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('local actuator', () => {
  let act: LocalActuator | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await act?.close();
    act = undefined;
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('scales real simulated engines 0 -> 2 -> 1 -> 0 on loopback ports; stopped processes exit', async () => {
    const basePort = await findFreePortRange(4);
    const changes: LocalReplica[][] = [];
    act = localActuator({
      command: [process.execPath, cliPath, 'sim', '--port', '{enginePort}', '--model', model, '--seed', '{index}'],
      basePort,
      output: 'ignore',
      onChange: (r) => changes.push([...r]),
    });
    expect(act.kind).toBe('local');
    expect(await act.currentReplicas('pool')).toBe(0);

    await act.scale('pool', 2);
    expect(await act.currentReplicas('pool')).toBe(2);
    const two = act.replicas();
    expect(two.map(({ index, port, enginePort, url }) => ({ index, port, enginePort, url }))).toEqual([
      { index: 0, port: basePort, enginePort: basePort + 1, url: `http://127.0.0.1:${basePort + 1}` },
      { index: 1, port: basePort + 2, enginePort: basePort + 3, url: `http://127.0.0.1:${basePort + 3}` },
    ]);
    expect(changes).toEqual([two]);
    await until('both sims to answer /health', async () => (await healthy(two[0]!.url)) && (await healthy(two[1]!.url)));
    // They really are the sims: the model is served.
    const models = (await (await fetch(`${two[1]!.url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toContain(model);

    await act.scale('pool', 1);
    expect(await act.currentReplicas('pool')).toBe(1);
    expect(act.replicas().map((r) => r.index)).toEqual([0]);
    expect(changes.at(-1)!.map((r) => r.index)).toEqual([0]);
    await act.settled();
    // The newest one was stopped and its process is gone; the oldest still serves.
    expect(alive(two[1]!.pid)).toBe(false);
    expect(await healthy(two[1]!.url)).toBe(false);
    expect(alive(two[0]!.pid)).toBe(true);
    expect(await healthy(two[0]!.url)).toBe(true);

    await act.scale('pool', 0);
    expect(await act.currentReplicas('pool')).toBe(0);
    expect(changes.at(-1)).toEqual([]);
    await act.settled();
    expect(alive(two[0]!.pid)).toBe(false);
    expect(await healthy(two[0]!.url)).toBe(false);
    expect(changes).toHaveLength(3);
    // Scaling to the count it already has changes nothing.
    await act.scale('pool', 0);
    expect(changes).toHaveLength(3);
  });

  it('SIGKILLs a replica that ignores SIGTERM after stopTimeoutMs', async () => {
    dir = await mkdtemp(join(tmpdir(), 'local-actuator-'));
    const marker = join(dir, 'ready');
    const script = `process.on('SIGTERM', () => {}); require('node:fs').writeFileSync(${JSON.stringify(marker)}, String(process.pid)); setInterval(() => {}, 1000);`;
    act = localActuator({ command: [process.execPath, '-e', script], basePort: await findFreePortRange(2), output: 'ignore', stopTimeoutMs: 300 });
    await act.scale('pool', 1);
    const [replica] = act.replicas();
    await until('the child to install its SIGTERM handler', async () => (await readFile(marker, 'utf8').catch(() => '')) === String(replica!.pid));
    const t0 = Date.now();
    await act.scale('pool', 0);
    expect(await act.currentReplicas('pool')).toBe(0);
    await act.settled();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(alive(replica!.pid)).toBe(false);
  });

  it('counts a replica that exits on its own as gone, reports it, and reuses its slot', async () => {
    const exits: { index: number; code: number | null }[] = [];
    const changes: number[][] = [];
    const basePort = await findFreePortRange(4);
    act = localActuator({
      // Replica 0 exits at once with status 3; any other index stays up.
      command: [process.execPath, '-e', `if (process.argv[1] === '0' && !process.env.KEEP) process.exit(3); setInterval(() => {}, 1000);`, '{index}'],
      basePort,
      output: 'ignore',
      onExit: (r, code) => exits.push({ index: r.index, code }),
      onChange: (r) => changes.push(r.map((x) => x.index)),
    });
    await act.scale('pool', 2);
    await until('replica 0 to exit', () => exits.length === 1);
    expect(exits).toEqual([{ index: 0, code: 3 }]);
    expect(await act.currentReplicas('pool')).toBe(1);
    expect(act.replicas().map((r) => r.index)).toEqual([1]);
    expect(changes).toEqual([[0, 1], [1]]);
    // Scaling back up fills the freed slot (its ports) first.
    process.env.KEEP = '1';
    try {
      await act.scale('pool', 2);
    } finally {
      delete process.env.KEEP;
    }
    expect(act.replicas().map((r) => r.index)).toEqual([0, 1]);
    expect(act.replicas()[0]!.enginePort).toBe(basePort + 1);
    await act.close();
    expect(await act.currentReplicas('pool')).toBe(0);
    expect(changes.at(-1)).toEqual([]);
    await expect(act.scale('pool', 1)).rejects.toThrow('closed');
  });

  it('rejects bad counts and a command that cannot start', async () => {
    act = localActuator({ command: [process.execPath, '-e', 'setInterval(() => {}, 1000)'], basePort: 65530, maxReplicas: 8, output: 'ignore' });
    await expect(act.scale('pool', -1)).rejects.toThrow(RangeError);
    await expect(act.scale('pool', 1.5)).rejects.toThrow(RangeError);
    // Ports run out before maxReplicas: 65530..65535 hold three replicas.
    await expect(act.scale('pool', 4)).rejects.toThrow('exceed the limit of 3');
    expect(await act.currentReplicas('pool')).toBe(0);
    expect(() => localActuator({ command: [], basePort: 9000 })).toThrow('command');
    expect(() => localActuator({ command: ['x'], basePort: 0 })).toThrow('basePort');

    const exits: number[] = [];
    const missing = localActuator({ command: [join(tmpdir(), 'no-such-binary-switchyard')], basePort: 20000, output: 'ignore', onExit: (r) => exits.push(r.index) });
    await expect(missing.scale('pool', 1)).rejects.toThrow('cannot start');
    expect(await missing.currentReplicas('pool')).toBe(0);
    expect(exits).toEqual([0]);
    await missing.close();
  });
});
