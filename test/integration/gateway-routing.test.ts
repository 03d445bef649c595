import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { startSim, type RunningSim } from '../../engine-sim/server.js';
import type { Gateway } from '../../router/server.js';
import { authHeaders, chatBody, metricValue, startGateway, testModel } from '../helpers/cluster.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function gatewayFor(engines: Parameters<typeof startGateway>[0], config: Record<string, unknown> = {}): Promise<{ gateway: Gateway; url: string }> {
  const gateway = await startGateway(engines, config);
  const url = await gateway.listen();
  cleanups.push(() => gateway.close());
  return { gateway, url };
}

async function sim(): Promise<RunningSim> {
  const s = await startSim({ model: testModel, port: 0, timeScale: 50 });
  cleanups.push(() => s.close());
  return s;
}

describe('routing through the live gateway', () => {
  it('keeps a model in the compute pools its placement names', async () => {
    const [a1, a2, b1] = [await sim(), await sim(), await sim()];
    const { url } = await gatewayFor(
      [
        { id: 'a1', url: a1.url, kind: 'vllm', models: [testModel], labels: { pool: 'a' } },
        { id: 'a2', url: a2.url, kind: 'vllm', models: [testModel], labels: { pool: 'a' } },
        { id: 'b1', url: b1.url, kind: 'vllm', models: [testModel], labels: { pool: 'b' } },
      ],
      { models: [{ name: testModel, pools: ['a'] }], routing: { policy: 'round-robin' } },
    );
    const pods = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
      expect(res.statusCode).toBe(200);
      pods.add(String(res.headers['x-switchyard-pod']));
      await res.body.json();
    }
    expect([...pods].sort()).toEqual(['a1', 'a2']);
  });

  it('spreads concurrent requests by in-flight count with least-request', async () => {
    const engines = await Promise.all([sim(), sim(), sim()]);
    for (const e of engines) e.setFaults({ slowMsPerToken: 20 });
    const { url } = await gatewayFor(
      engines.map((e, i) => ({ id: `e${i}`, url: e.url, kind: 'vllm' as const, models: [testModel], labels: {} })),
      { routing: { policy: 'least-request' } },
    );
    const results = await Promise.all(
      Array.from({ length: 9 }, async () => {
        const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody({ max_tokens: 5 }) });
        await res.body.json();
        return String(res.headers['x-switchyard-pod']);
      }),
    );
    const counts = new Map<string, number>();
    for (const pod of results) counts.set(pod, (counts.get(pod) ?? 0) + 1);
    expect([...counts.values()].sort()).toEqual([3, 3, 3]);
    const text = await (await request(`${url}/metrics`)).body.text();
    expect(metricValue(text, 'switchyard_routing_decisions_total', { policy: 'least-request' })).toBe(9);
  });

  it('retries on another engine when a kept-alive connection was closed by the engine', async () => {
    // An engine that answers once per connection and then drops the socket on the next request, as a server
    // does when its keep-alive timeout races the client's reuse of the connection.
    const served = new WeakSet<object>();
    const flaky: Server = createServer((req, res) => {
      if (served.has(req.socket)) {
        req.socket.destroy();
        return;
      }
      served.add(req.socket);
      if (req.url === '/health') {
        res.end();
        return;
      }
      req.resume();
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
      });
    });
    flaky.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => flaky.close(r)));
    const healthy = await sim();
    const { url } = await gatewayFor(
      [
        { id: 'flaky', url: `http://127.0.0.1:${(flaky.address() as AddressInfo).port}`, kind: 'vllm', models: [testModel], labels: {} },
        { id: 'healthy', url: healthy.url, kind: 'vllm', models: [testModel], labels: {} },
      ],
      { routing: { policy: 'round-robin' }, health: { intervalMs: 60_000 }, upstream: { connections: 1 } },
    );
    const pods: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
      expect(res.statusCode).toBe(200);
      pods.push(String(res.headers['x-switchyard-pod']));
      await res.body.dump();
    }
    const text = await (await request(`${url}/metrics`)).body.text();
    expect(metricValue(text, 'switchyard_retries_total', { reason: 'connection_closed' })).toBeGreaterThan(0);
    expect(pods).toContain('healthy');
  });
});
