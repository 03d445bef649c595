import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { engineKey, engineSetKey, parseEngineRecord } from '../../../core/discovery/engine-record.js';
import { discoverFromRegistry } from '../../../core/discovery/redis-registry.js';
import type { EngineSpec } from '../../../core/engine.js';
import { type Registration, startRegistration } from '../../../engine-sidecar/registration.js';

const REDIS_URL = process.env.REDIS_URL;

const spec = (id: string): EngineSpec & { sidecarUrl: string } => ({
  id,
  url: 'http://10.0.0.7:8000',
  kind: 'vllm',
  models: ['m1'],
  labels: { pool: 'a100' },
  kvCapacityTokens: 440_000,
  kvEventsEndpoint: 'tcp://10.0.0.7:5558',
  sidecarUrl: 'http://10.0.0.7:8090',
});

describe.runIf(REDIS_URL)('sidecar registration (Redis)', () => {
  let redis: Redis;
  let prefix: string;
  const started: Registration[] = [];

  beforeAll(() => {
    redis = new Redis(REDIS_URL!, { maxRetriesPerRequest: 1, commandTimeout: 2_000 });
  });
  afterEach(async () => {
    for (const r of started.splice(0)) await r.deregister();
  });
  afterAll(async () => {
    await redis.quit();
  });

  const register = (record: () => ReturnType<typeof spec> | undefined, ttlMs = 1_500): Registration => {
    prefix = `switchyard-test:${randomUUID()}:`;
    const r = startRegistration({ redis, prefix, ttlMs, record, onError: (err) => expect.fail(err.message) });
    started.push(r);
    return r;
  };

  it('writes the record with a TTL in the layout routers read, and deregisters it', async () => {
    const r = register(() => spec('e1'));
    expect(await r.heartbeat()).toBe(true);
    const pttl = await redis.pttl(engineKey(prefix, 'e1'));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1_500);
    expect(await redis.smembers(engineSetKey(prefix))).toEqual(['e1']);
    const record = parseEngineRecord((await redis.get(engineKey(prefix, 'e1')))!);
    expect(record).toMatchObject({ ...spec('e1'), heartbeatAt: expect.any(Number) });

    // The router's reader sees it.
    const seen = vi.fn();
    const discovery = discoverFromRegistry({ redis, prefix, intervalMs: 60_000, onChange: seen });
    await discovery.refresh();
    discovery.stop();
    expect(seen).toHaveBeenCalledWith([expect.objectContaining({ id: 'e1', url: 'http://10.0.0.7:8000', sidecarUrl: 'http://10.0.0.7:8090' })]);

    await r.deregister();
    expect(r.registered).toBe(false);
    expect(await redis.exists(engineKey(prefix, 'e1'))).toBe(0);
    expect(await redis.smembers(engineSetKey(prefix))).toEqual([]);
    // No heartbeat brings it back.
    await sleep(700);
    expect(await redis.exists(engineKey(prefix, 'e1'))).toBe(0);
  });

  it('heartbeats every third of the TTL, keeping the record alive past its TTL', async () => {
    const r = register(() => spec('e2'), 600);
    await r.heartbeat();
    await sleep(1_000);
    expect(await redis.exists(engineKey(prefix, 'e2'))).toBe(1);
  });

  it('writes nothing until the record is known', async () => {
    let known = false;
    const r = register(() => (known ? spec('e3') : undefined));
    expect(await r.heartbeat()).toBe(false);
    expect(await redis.exists(engineKey(prefix, 'e3'))).toBe(0);
    known = true;
    expect(await r.heartbeat()).toBe(true);
    expect(r.registered).toBe(true);
  });

  it('lets the record expire within its TTL once heartbeats stop', async () => {
    const r = register(() => spec('e4'), 500);
    await r.heartbeat();
    r.stop();
    await vi.waitFor(async () => expect(await redis.exists(engineKey(prefix, 'e4'))).toBe(0), { timeout: 1_500, interval: 50 });
  });
});
