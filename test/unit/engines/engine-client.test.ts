import { afterEach, describe, expect, it } from 'vitest';
import type { EngineSpec } from '../../../core/engine.js';
import { EngineClient } from '../../../router/engines/engine-client.js';
import { completion, startFakeEngine, waitFor, type FakeEngine } from './fake-engine.js';

const spec = (url: string): EngineSpec => ({ id: 'e1', url, kind: 'vllm', models: ['llama'], labels: {} });

let engine: FakeEngine | undefined;
let client: EngineClient | undefined;

afterEach(async () => {
  await client?.close();
  await engine?.close();
  client = undefined;
  engine = undefined;
});

describe('EngineClient', () => {
  it('probes /health: true on 2xx, false on another status', async () => {
    engine = await startFakeEngine();
    client = new EngineClient(spec(engine.url));
    expect(await client.probeHealth(1_000)).toBe(true);
    engine.state.healthStatus = 503;
    expect(await client.probeHealth(1_000)).toBe(false);
    expect(engine.state.healthRequests).toBe(2);
  });

  it('reports a probe that outlasts its timeout as unhealthy', async () => {
    let open!: () => void;
    engine = await startFakeEngine({ healthGate: new Promise<void>((resolve) => (open = resolve)) });
    client = new EngineClient(spec(engine.url));
    const started = Date.now();
    expect(await client.probeHealth(100)).toBe(false);
    expect(Date.now() - started).toBeLessThan(1_000);
    open();
  });

  it('reports an engine that is not listening as unhealthy', async () => {
    engine = await startFakeEngine();
    const url = engine.url;
    await engine.close();
    engine = undefined;
    client = new EngineClient(spec(url));
    expect(await client.probeHealth(1_000)).toBe(false);
  });

  it('scrapes /metrics as text and rejects a non-2xx answer', async () => {
    engine = await startFakeEngine({ metricsText: 'vllm:num_requests_running 4\n' });
    client = new EngineClient(spec(engine.url));
    expect(await client.scrapeMetrics(1_000)).toBe('vllm:num_requests_running 4\n');
    engine.state.metricsStatus = 404;
    await expect(client.scrapeMetrics(1_000)).rejects.toThrow('engine "e1": GET /metrics answered 404');
  });

  it('keeps probing while every inference connection is busy', async () => {
    engine = await startFakeEngine();
    client = new EngineClient(spec(engine.url), { connections: 1 });
    const pool = client.pool;
    const streams = [pool.request(completion), pool.request(completion)];
    await waitFor('the inference pool to be saturated', () => engine!.state.completionRequests === 1 && pool.stats.pending === 1);
    expect(await client.probeHealth(500)).toBe(true);
    engine.state.releaseCompletions();
    const first = await streams[0];
    expect(first.statusCode).toBe(200);
    await first.body.json();
    await waitFor('the queued request to reach the engine', () => engine!.state.completionRequests === 2);
    engine.state.releaseCompletions();
    const second = await streams[1];
    expect(await second.body.json()).toMatchObject({ object: 'text_completion' });
  });

  it('reuses one keep-alive connection for sequential inference requests', async () => {
    engine = await startFakeEngine();
    client = new EngineClient(spec(engine.url));
    for (let i = 0; i < 3; i++) {
      const pending = client.pool.request(completion);
      await waitFor('the request to reach the engine', () => engine!.state.completionRequests === i + 1);
      engine.state.releaseCompletions();
      await (await pending).body.json();
      // undici hands the socket back to the pool on the tick after the body ends.
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(engine.state.connections).toBe(1);
  });

  it('closes gracefully: a request already running completes', async () => {
    engine = await startFakeEngine();
    const c = new EngineClient(spec(engine.url));
    const pending = c.pool.request(completion);
    await waitFor('the request to reach the engine', () => engine!.state.completionRequests === 1);
    const closed = c.close();
    engine.state.releaseCompletions();
    const res = await pending;
    expect(await res.body.json()).toMatchObject({ id: 'cmpl-1' });
    await closed;
    expect(c.pool.closed).toBe(true);
    await expect(c.probeHealth(1_000)).resolves.toBe(false);
  });

  it('rejects a url with a path, which a pool would silently drop', () => {
    expect(() => new EngineClient(spec('http://127.0.0.1:8000/v1'))).toThrow(/url must be an origin/);
    expect(() => new EngineClient(spec('http://127.0.0.1:8000'), { connections: 0 })).toThrow(/connections/);
  });
});
