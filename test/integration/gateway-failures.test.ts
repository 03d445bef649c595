import OpenAI from 'openai';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import {
  authHeaders,
  chatBody,
  metricValue,
  spawnSim,
  startCluster,
  startGateway,
  testKey,
  testModel,
  type Cluster,
  type SimProcess,
} from '../helpers/cluster.js';
import type { Gateway } from '../../router/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function cluster(opts: Parameters<typeof startCluster>[0]): Promise<Cluster> {
  const c = await startCluster(opts);
  cleanups.push(() => c.close());
  return c;
}

async function gatewayMetrics(url: string): Promise<string> {
  return (await request(`${url}/metrics`)).body.text();
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('failures before the first byte are retried on another engine', () => {
  it('retries engine 500s transparently', async () => {
    const c = await cluster({ engines: 2, config: { routing: { policy: 'round-robin' } } });
    c.sims[0]!.setFaults({ failNext: 3, failStatus: 500 });
    for (let i = 0; i < 6; i++) {
      const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
      expect(res.statusCode).toBe(200);
      await res.body.json();
    }
    const text = await gatewayMetrics(c.url);
    expect(metricValue(text, 'switchyard_retries_total', { reason: 'status_500' })).toBe(3);
    expect(metricValue(text, 'switchyard_requests_total', { status: '200' })).toBe(6);
  });

  it('retries engine 429s without counting them against the engine health', async () => {
    const c = await cluster({ engines: 2, config: { routing: { policy: 'round-robin' }, health: { failureThreshold: 1 } } });
    c.sims[1]!.setFaults({ failNext: 2, failStatus: 429 });
    for (let i = 0; i < 4; i++) {
      const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-switchyard-pod']).toMatch(/^sim-[01]$/);
      await res.body.json();
    }
    expect(c.gateway.registry.snapshot().every((e) => e.healthy)).toBe(true);
    expect(metricValue(await gatewayMetrics(c.url), 'switchyard_retries_total', { reason: 'status_429' })).toBe(2);
  });

  it('gives up after the configured attempts with a 502 in OpenAI shape', async () => {
    const c = await cluster({ engines: 2, config: { retry: { maxAttempts: 2 } } });
    for (const s of c.sims) s.setFaults({ failNext: 10, failStatus: 500 });
    const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
    expect(res.statusCode).toBe(502);
    const body = (await res.body.json()) as { error: { code: string } };
    expect(body.error.code).toBe('upstream_error');
  });

  it('routes around an engine that is down, and ejects it', async () => {
    const dead = await spawnSim([]);
    const alive = await spawnSim([]);
    const gateway = await startGateway(
      [
        { id: 'dead', url: dead.url, kind: 'vllm', models: [testModel], labels: {} },
        { id: 'alive', url: alive.url, kind: 'vllm', models: [testModel], labels: {} },
      ],
      { routing: { policy: 'round-robin' }, health: { intervalMs: 60_000, failureThreshold: 2 } },
    );
    const url = await gateway.listen();
    cleanups.push(() => gateway.close(), () => alive.kill(), () => dead.kill());
    await dead.kill();
    for (let i = 0; i < 4; i++) {
      const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-switchyard-pod']).toBe('alive');
      await res.body.json();
    }
    expect(gateway.registry.snapshot().find((e) => e.spec.id === 'dead')!.healthy).toBe(false);
  });

  it('answers 504 when no engine sends a first byte in time', async () => {
    const c = await cluster({ engines: 1, config: { timeouts: { firstTokenMs: 300 } } });
    c.sims[0]!.setFaults({ hangBeforeFirstByte: true });
    const started = Date.now();
    const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody({ stream: true }) });
    expect(res.statusCode).toBe(504);
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('answers 503 when every engine of the model is unhealthy', async () => {
    const dead = await spawnSim([]);
    const gateway = await startGateway([{ id: 'dead', url: dead.url, kind: 'vllm', models: [testModel], labels: {} }], {
      health: { intervalMs: 100 },
    });
    const url = await gateway.listen();
    cleanups.push(() => gateway.close());
    await dead.kill();
    await waitFor(async () => !gateway.registry.snapshot()[0]!.healthy, 'the engine to be marked unhealthy');
    const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
    expect(res.statusCode).toBe(503);
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('no_healthy_engine');
    expect((await request(`${url}/readyz`)).statusCode).toBe(503);
  });
});

describe('failures after the first byte end the stream cleanly', () => {
  it('sends an error event when the engine process dies mid-stream', async () => {
    const sim: SimProcess = await spawnSim(['--time-scale', '50', '--die-mid-stream-after', '3', '--die-mode', 'exit']);
    const gateway: Gateway = await startGateway([{ id: 'fragile', url: sim.url, kind: 'vllm', models: [testModel], labels: {} }]);
    const url = await gateway.listen();
    cleanups.push(() => gateway.close(), () => sim.kill());
    const client = new OpenAI({ apiKey: testKey, baseURL: `${url}/v1`, maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: testModel, messages: [{ role: 'user', content: 'long answer' }], max_tokens: 50, stream: true });
    let chunks = 0;
    const consume = async () => {
      for await (const _ of stream) chunks++;
    };
    await expect(consume()).rejects.toThrow(/failed in the middle of the stream/);
    expect(chunks).toBeGreaterThan(0);
    expect(chunks).toBeLessThan(50);
    await new Promise<void>((resolve) => (sim.child.exitCode !== null ? resolve() : sim.child.once('exit', () => resolve())));
    expect(metricValue(await gatewayMetrics(url), 'switchyard_requests_total', { status: 'stream_error' })).toBe(1);
  });

  it('sends an error event when an in-process engine drops the connection mid-stream', async () => {
    const c = await cluster({ engines: 1 });
    c.sims[0]!.setFaults({ dieMidStreamAfter: 2, dieMode: 'socket' });
    const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody({ stream: true, max_tokens: 40 }) });
    expect(res.statusCode).toBe(200);
    const text = await res.body.text();
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    const last = JSON.parse(events[events.length - 1]!.slice('data: '.length)) as { error: { type: string; code: string } };
    expect(last.error.type).toBe('server_error');
    expect(last.error.code).toBe('upstream_error');
    expect(text).not.toContain('[DONE]');
  });
});

describe('a client that goes away', () => {
  it('aborts the upstream request and brings in-flight back to 0', async () => {
    const c = await cluster({ engines: 1 });
    c.sims[0]!.setFaults({ slowMsPerToken: 200 });
    const controller = new AbortController();
    const res = await request(`${c.url}/v1/chat/completions`, {
      method: 'POST',
      headers: authHeaders(),
      body: chatBody({ stream: true, max_tokens: 200 }),
      signal: controller.signal,
    });
    expect(res.statusCode).toBe(200);
    // Read the first chunk without ending the iteration, which would destroy the body.
    await res.body[Symbol.asyncIterator]().next();
    const during = await gatewayMetrics(c.url);
    expect(metricValue(during, 'switchyard_in_flight_requests', { engine: 'sim-0' })).toBe(1);
    controller.abort();
    await waitFor(async () => metricValue(await gatewayMetrics(c.url), 'switchyard_in_flight_requests', { engine: 'sim-0' }) === 0, 'gateway in-flight 0');
    await waitFor(async () => {
      const simText = await (await request(`${c.sims[0]!.url}/metrics`)).body.text();
      return metricValue(simText, 'vllm:num_requests_running') === 0 && metricValue(simText, 'vllm:num_requests_waiting') === 0;
    }, 'the engine to drop the aborted request');
    expect(metricValue(await gatewayMetrics(c.url), 'switchyard_requests_total', { status: 'client_closed' })).toBe(1);
  });
});

describe('stream timeouts', () => {
  it('ends a stream whose engine goes silent past the idle timeout with a timeout event', async () => {
    const c = await cluster({ engines: 1, config: { timeouts: { idleMs: 200 } } });
    c.sims[0]!.setFaults({ slowMsPerToken: 1_000 });
    const started = Date.now();
    const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody({ stream: true, max_tokens: 20 }) });
    expect(res.statusCode).toBe(200);
    const text = await res.body.text();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(text).toContain('"code":"timeout"');
    expect(text).not.toContain('[DONE]');
  });

  it('ends a stream that outlives the total timeout', async () => {
    const c = await cluster({ engines: 1, config: { timeouts: { totalMs: 400 } } });
    c.sims[0]!.setFaults({ slowMsPerToken: 50 });
    const res = await request(`${c.url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody({ stream: true, max_tokens: 200 }) });
    expect(res.statusCode).toBe(200);
    const text = await res.body.text();
    expect(text).toContain('total timeout');
    expect(text).not.toContain('[DONE]');
    expect(metricValue(await gatewayMetrics(c.url), 'switchyard_in_flight_requests')).toBe(0);
  });
});
