import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ActuatorConfigSchema, createActuator, type LocalReplica } from '../../../autoscaler/actuators/index.js';
import { startFakeKubeApi, type FakeKubeApi } from '../../helpers/fake-kube-api.js';
import { findFreePortRange } from './ports.js';

describe('ActuatorConfigSchema', () => {
  it('applies defaults and keeps what was given', () => {
    expect(ActuatorConfigSchema.parse({ kind: 'kubernetes', namespace: 'llm', name: 'vllm' })).toEqual({ kind: 'kubernetes', namespace: 'llm', resource: 'Deployment', name: 'vllm' });
    expect(ActuatorConfigSchema.parse({ kind: 'kubernetes', namespace: 'llm', name: 'vllm', resource: 'StatefulSet' })).toMatchObject({ resource: 'StatefulSet' });
    expect(ActuatorConfigSchema.parse({ kind: 'local', command: ['node', 'sim', '--port', '{enginePort}'], basePort: 9100 })).toEqual({
      kind: 'local',
      command: ['node', 'sim', '--port', '{enginePort}'],
      basePort: 9100,
      host: '127.0.0.1',
      stopTimeoutMs: 10_000,
      maxReplicas: 64,
      output: 'stderr',
    });
  });

  it('rejects unknown kinds, unknown keys and bad values', () => {
    expect(ActuatorConfigSchema.safeParse({ kind: 'nomad', name: 'x' }).success).toBe(false);
    expect(ActuatorConfigSchema.safeParse({ kind: 'kubernetes', namespace: 'llm', name: 'x', replicas: 3 }).success).toBe(false);
    expect(ActuatorConfigSchema.safeParse({ kind: 'kubernetes', namespace: 'llm', name: 'x', resource: 'ReplicaSet' }).success).toBe(false);
    expect(ActuatorConfigSchema.safeParse({ kind: 'kubernetes', namespace: '', name: 'x' }).success).toBe(false);
    expect(ActuatorConfigSchema.safeParse({ kind: 'local', command: [], basePort: 9100 }).success).toBe(false);
    expect(ActuatorConfigSchema.safeParse({ kind: 'local', command: ['node'], basePort: 70000 }).success).toBe(false);
    expect(ActuatorConfigSchema.safeParse({ kind: 'local', command: ['node'], basePort: 9100, stopTimeoutMs: 0 }).success).toBe(false);
  });
});

describe('createActuator', () => {
  let api: FakeKubeApi | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await api?.close();
    api = undefined;
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('builds a kubernetes actuator from config (client loaded on first use)', async () => {
    api = await startFakeKubeApi();
    api.setScale('statefulsets', 'llm', 'vllm', 1);
    const act = createActuator(ActuatorConfigSchema.parse({ kind: 'kubernetes', namespace: 'llm', resource: 'StatefulSet', name: 'vllm' }), { kubeConfig: api.kubeConfig() });
    expect(act.kind).toBe('kubernetes');
    expect(await act.currentReplicas('pool')).toBe(1);
    await act.scale('pool', 3);
    expect(api.scaleOf('statefulsets', 'llm', 'vllm')).toBe(3);
    expect(api.requests.map((r) => `${r.method} ${r.path} ${r.contentType ?? '-'}`)).toEqual([
      'GET /apis/apps/v1/namespaces/llm/statefulsets/vllm/scale -',
      'PATCH /apis/apps/v1/namespaces/llm/statefulsets/vllm/scale application/merge-patch+json',
    ]);
    await act.close();
  });

  it('builds a local actuator from config, substituting the placeholders, with the hooks wired', async () => {
    dir = await mkdtemp(join(tmpdir(), 'actuator-'));
    const basePort = await findFreePortRange(4);
    const script = `require('node:fs').writeFileSync(require('node:path').join(process.argv[1], process.argv[2] + '.json'), JSON.stringify(process.argv.slice(2))); setInterval(() => {}, 1000);`;
    const changes: number[][] = [];
    const act = createActuator(
      ActuatorConfigSchema.parse({ kind: 'local', command: [process.execPath, '-e', script, dir, '{index}', '{port}', '{enginePort}', '{host}'], basePort, output: 'ignore', stopTimeoutMs: 2000 }),
      { onChange: (r: readonly LocalReplica[]) => changes.push(r.map((x) => x.index)) },
    );
    expect(act.kind).toBe('local');
    await act.scale('pool', 2);
    expect(await act.currentReplicas('pool')).toBe(2);
    const argv0 = await waitForJson(join(dir, '0.json'));
    const argv1 = await waitForJson(join(dir, '1.json'));
    expect(argv0).toEqual(['0', String(basePort), String(basePort + 1), '127.0.0.1']);
    expect(argv1).toEqual(['1', String(basePort + 2), String(basePort + 3), '127.0.0.1']);
    await act.close();
    expect(changes).toEqual([[0, 1], []]);
  });
});

async function waitForJson(path: string): Promise<unknown> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return JSON.parse(await readFile(path, 'utf8'));
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
