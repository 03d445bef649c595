import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../../router/auth.js';
import { spawnSim, testModel, type SimProcess } from '../helpers/cluster.js';

const cli = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const key = 'sk-serve-test-secret-4f1c2b';
const prompt = 'my very private prompt about zebras';

describe('switchyard serve as a process', () => {
  let sim: SimProcess;
  const collector = Fastify();
  const exported: unknown[] = [];

  beforeAll(async () => {
    sim = await spawnSim(['--time-scale', '50']);
    collector.post('/v1/traces', async (req) => {
      exported.push(req.body);
      return {};
    });
    await collector.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await sim.kill();
    await collector.close();
  });

  it('serves from a config file, logs JSON with request ids but no keys or prompts, and exports traces over OTLP', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-serve-'));
    const config = join(dir, 'switchyard.yaml');
    writeFileSync(
      config,
      [
        'server: { port: 0 }',
        `auth: { keys: [{ principal: team-a, sha256: ${sha256(key).toString('hex')} }] }`,
        `engines: [{ id: gpu-0, url: "${sim.url}", kind: vllm, models: [${testModel}], labels: { pool: a } }]`,
        `models: [{ name: ${testModel}, pools: [a] }]`,
        'log: { level: info }',
      ].join('\n'),
    );
    const collectorUrl = `http://127.0.0.1:${(collector.server.address() as { port: number }).port}`;
    const child = spawn(process.execPath, [cli, 'serve', '--config', config], {
      env: {
        ...process.env,
        OTEL_EXPORTER_OTLP_ENDPOINT: collectorUrl,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_BSP_SCHEDULE_DELAY: '50',
        OTEL_SERVICE_NAME: 'switchyard-test',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    const lines = createInterface({ input: child.stdout! });
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`serve did not start: ${output.join('\n')}`)), 15_000);
      lines.on('line', (line) => {
        output.push(line);
        const m = /^switchyard gateway listening on (http:\/\/\S+)/.exec(line);
        if (m !== null) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    try {
      const res = await request(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-request-id': 'req-abc-123' },
        body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content: prompt }], max_tokens: 4 }),
      });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-request-id']).toBe('req-abc-123');
      expect(res.headers['x-switchyard-pod']).toBe('gpu-0');
      await res.body.json();
      const denied = await request(`${url}/v1/models`, { headers: { authorization: 'Bearer sk-not-the-key-9999' } });
      expect(denied.statusCode).toBe(401);
      await denied.body.dump();

      const deadline = Date.now() + 10_000;
      while (exported.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    } finally {
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    }

    const logs = output.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logs.some((l) => l.reqId === 'req-abc-123')).toBe(true);
    const all = output.join('\n');
    expect(all).not.toContain(key);
    expect(all).not.toContain('sk-not-the-key-9999');
    expect(all).not.toContain('zebras');

    const spans = JSON.stringify(exported);
    expect(spans).toContain('switchyard.request');
    expect(spans).toContain('gpu-0');
    expect(spans).toContain('switchyard-test');
  });
});
