import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { engineKey, engineSetKey, type EngineRecord } from '../../core/discovery/engine-record.js';
import { startSim, type RunningSim } from '../../engine-sim/server.js';
import type { Gateway } from '../../router/server.js';
import { authHeaders, chatBody, startGateway, testModel } from '../helpers/cluster.js';

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
