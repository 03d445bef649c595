import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { engineKey, engineSetKey, type EngineRecord } from '../../core/discovery/engine-record.js';
import { startSim, type RunningSim } from '../../engine-sim/server.js';
import type { Gateway } from '../../router/server.js';
import { authHeaders, chatBody, startGateway, testModel } from '../helpers/cluster.js';
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js';

const REDIS_URL = process.env.REDIS_URL;

/** Engines found in the Redis registry, written here as a sidecar would (core/discovery/engine-record.ts). */
describe.runIf(REDIS_URL)('engine discovery from the Redis registry', () => {
  const prefix = `sy-test-registry-${randomBytes(4).toString('hex')}:`;
  let redis: Redis;
  let sim: RunningSim;
  let gateway: Gateway;
  let url: string;

  beforeAll(async () => {
    redis = new Redis(REDIS_URL!);
    sim = await startSim({ model: testModel, port: 0, timeScale: 50 });
    gateway = await startGateway([], {
      redis: { url: REDIS_URL },
      discovery: { registry: { enabled: true, prefix, intervalMs: 100 } },
      limits: { redisKeyPrefix: `${prefix}rl:` },
      adapters: { redisKeyPrefix: `${prefix}adapters:` },
      kvcache: { redisKeyPrefix: `${prefix}kv:` },
    });
    url = await gateway.listen();
  });

  afterAll(async () => {
    await gateway?.close();
    await sim?.close();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  const register = async (id: string, ttlMs: number) => {
    const record: EngineRecord = { id, url: sim.url, kind: 'vllm', models: [testModel], labels: { pool: 'default' }, heartbeatAt: Date.now() };
    await redis.multi().set(engineKey(prefix, id), JSON.stringify(record), 'PX', ttlMs).sadd(engineSetKey(prefix), id).exec();
  };
  const chat = async () => {
    const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
    await res.body.dump();
    return { status: res.statusCode, pod: res.headers['x-switchyard-pod'] };
  };

  it('routes to an engine once its sidecar registers it, and drops it when the heartbeat stops', async () => {
    expect((await chat()).status).toBe(404);
    await register('registered-0', 1_500);
    await vi.waitFor(async () => expect(await chat()).toEqual({ status: 200, pod: 'registered-0' }), { timeout: 5_000, interval: 100 });
    // No heartbeat: the record expires, the router forgets the engine, and the id leaves the set.
    await vi.waitFor(async () => expect((await chat()).status).toBe(404), { timeout: 5_000, interval: 100 });
    expect(await redis.smembers(engineSetKey(prefix))).toEqual([]);
  });
});

/** Engines from Kubernetes EndpointSlices, served by a fake API server that records what the gateway asks. */
describe('engine discovery from Kubernetes EndpointSlices', () => {
  let api: FakeKubeApi;
  let sim: RunningSim;
  let gateway: Gateway;
  let url: string;

  beforeAll(async () => {
    api = await startFakeKubeApi();
    sim = await startSim({ model: testModel, port: 0, timeScale: 50 });
    gateway = await startGateway([], { discovery: { kubernetes: { enabled: true, namespace: 'llm', labelSelector: 'switchyard.io/role=engine', models: [testModel] } } }, undefined, {
      kubeConfig: api.kubeConfig(),
    });
    url = await gateway.listen();
  });

  afterAll(async () => {
    await gateway?.close();
    await sim?.close();
    await api?.close();
  });

  const chat = async () => {
    const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
    await res.body.dump();
    return { status: res.statusCode, pod: res.headers['x-switchyard-pod'] };
  };

  it('routes to ready endpoints of the selected slices as they come and go', async () => {
    expect((await chat()).status).toBe(404);
    const { hostname, port } = new URL(sim.url);
    const slice = (ready: boolean) => ({
      metadata: { name: 'engines-1', namespace: 'llm', labels: { 'switchyard.io/role': 'engine' } },
      addressType: 'IPv4' as const,
      ports: [{ name: 'http', port: Number(port), protocol: 'TCP' }],
      endpoints: [{ addresses: [hostname], conditions: { ready, serving: ready, terminating: false }, targetRef: { kind: 'Pod', name: 'engine-pod-0', namespace: 'llm' } }],
    });
    api.applyEndpointSlice(slice(true));
    await vi.waitFor(async () => expect(await chat()).toEqual({ status: 200, pod: 'engine-pod-0' }), { timeout: 5_000, interval: 100 });
    api.applyEndpointSlice(slice(false));
    await vi.waitFor(async () => expect((await chat()).status).toBe(404), { timeout: 5_000, interval: 100 });
    // A namespaced list and watch with the configured selector: what the router's Role must allow, nothing more.
    const paths = new Set(api.requests.map((r) => `${r.method} ${r.path}`));
    expect([...paths]).toEqual(['GET /apis/discovery.k8s.io/v1/namespaces/llm/endpointslices']);
    expect(api.requests.every((r) => r.query.labelSelector === 'switchyard.io/role=engine')).toBe(true);
  });
});
