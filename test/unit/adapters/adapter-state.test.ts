import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryAdapterState } from '../../../core/state/memory-adapter-state.js';
import { WINDOW_MS } from '../../../core/state/rate-limit.js';
import { redisAdapterState } from '../../../core/state/redis-adapter-state.js';
import { adapterStateSuite } from './adapter-state.suite.js';

const REDIS_URL = process.env.REDIS_URL;
const W = WINDOW_MS;
const T0 = Math.floor(Date.now() / W) * W;

describe('memory adapter state', () => {
  const shared = memoryAdapterState();
  adapterStateSuite(() => shared);

  describe('on an injected clock', () => {
    it('slides demand over two windows, the previous weighted by its overlap', async () => {
      let t = T0 + 30_000;
      const store = memoryAdapterState({ now: () => t });
      for (let i = 0; i < 60; i++) await store.recordDemand('a');
      await store.recordDemand('b');
      expect(await store.demand()).toEqual(
        new Map([
          ['a', { perMinute: 60, lastUsed: T0 + 30_000 }],
          ['b', { perMinute: 1, lastUsed: T0 + 30_000 }],
        ]),
      );
      // 15 s into the next window 3/4 of the previous one overlaps the last minute.
      t = T0 + W + 15_000;
      await store.recordDemand('a');
      expect((await store.demand()).get('a')).toEqual({ perMinute: 46, lastUsed: T0 + W + 15_000 });
      expect((await store.demand()).get('b')).toEqual({ perMinute: 0.75, lastUsed: T0 + 30_000 });
      // Two windows on, only lastUsed remains (what least-recently-used eviction reads).
      t = T0 + 3 * W;
      expect((await store.demand()).get('b')).toEqual({ perMinute: 0, lastUsed: T0 + 30_000 });
    });

    it('expires the lease and claims on its clock', async () => {
      let t = T0;
      const store = memoryAdapterState({ now: () => t });
      expect(await store.acquireLease('a', 1000)).toBe(true);
      expect(await store.claimLoad('x', 'a', 1000)).toBe(true);
      t += 999;
      expect(await store.acquireLease('b', 1000)).toBe(false);
      expect(await store.claimLoad('x', 'b', 1000)).toBe(false);
      t += 1;
      expect(await store.acquireLease('b', 1000)).toBe(true);
      expect(await store.claimLoad('x', 'b', 1000)).toBe(true);
      await expect(store.acquireLease('a', 0)).rejects.toThrow(RangeError);
    });
  });
});

describe.runIf(REDIS_URL)('Redis adapter state', () => {
  const keyPrefix = `switchyard-test:adapters:${randomUUID()}:`;
  let client: Redis;
  let admin: Redis;

  beforeAll(async () => {
    // Configured as the gateway configures its client.
    client = new Redis(REDIS_URL!, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000 });
    await client.connect();
    admin = new Redis(REDIS_URL!);
  });
  afterAll(async () => {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await admin.unlink(...keys);
      cursor = next;
    } while (cursor !== '0');
    await client?.quit();
    await admin?.quit();
  });

  adapterStateSuite(() => redisAdapterState({ redis: client, keyPrefix }));

  it('keeps placements in one hash (engine NUL adapter -> JSON) and demand in another, under one hash tag', async () => {
    const store = redisAdapterState({ redis: client, keyPrefix });
    await store.setPlacement({ engine: 'e1', adapter: 'layout-a', state: 'failed', reason: 'boom', since: 42 });
    expect(await admin.hget(`${keyPrefix}{adapters}:placements`, 'e1\u0000layout-a')).toBe('{"state":"failed","since":42,"reason":"boom"}');
    await store.recordDemand('layout-a');
    await store.recordDemand('layout-a');
    const packed = await admin.hget(`${keyPrefix}{adapters}:demand`, 'layout-a');
    const [start, curr, prev, lastUsed] = packed!.split(':').map(Number);
    expect(start! % W).toBe(0);
    expect(curr).toBe(2);
    expect(prev).toBe(0);
    expect(lastUsed! - start!).toBeLessThan(W);
    // Garbage in the hash is skipped, not fatal.
    await admin.hset(`${keyPrefix}{adapters}:placements`, 'no-separator', '{}', 'e1\u0000bad', 'not json');
    expect((await store.placements()).filter((p) => p.adapter.startsWith('layout') || p.adapter === 'bad')).toEqual([
      { engine: 'e1', adapter: 'layout-a', state: 'failed', reason: 'boom', since: 42 },
    ]);
    await admin.hdel(`${keyPrefix}{adapters}:placements`, 'no-separator', 'e1\u0000bad', 'e1\u0000layout-a');
  });

  it('moves demand to the current window on the Redis clock, weighting the previous one', async () => {
    const store = redisAdapterState({ redis: client, keyPrefix });
    const [seconds, micros] = await admin.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const ws = now - (now % W);
    // 30 counted in the previous window, 100 two windows back (weighs nothing now).
    await admin.hset(`${keyPrefix}{adapters}:demand`, 'slide-a', `${ws - W}:30:0:${ws - 1}`, 'slide-b', `${ws - 2 * W}:100:0:${ws - W - 1}`);
    const d = await store.demand();
    const elapsedMax = Date.now() - ws + 1000;
    expect(d.get('slide-a')!.perMinute).toBeLessThanOrEqual((30 * (W - (now - ws))) / W + 1e-9);
    expect(d.get('slide-a')!.perMinute).toBeGreaterThanOrEqual(Math.max(0, (30 * (W - Math.min(W, elapsedMax))) / W));
    expect(d.get('slide-a')!.lastUsed).toBe(ws - 1);
    expect(d.get('slide-b')).toEqual({ perMinute: 0, lastUsed: ws - W - 1 });
    await store.recordDemand('slide-b');
    const [, curr, prev] = (await admin.hget(`${keyPrefix}{adapters}:demand`, 'slide-b'))!.split(':').map(Number);
    expect([curr, prev]).toEqual([1, 0]);
  });

  it('replicas on separate connections share claims, the lease and demand', async () => {
    const other = new Redis(REDIS_URL!);
    try {
      const a = redisAdapterState({ redis: client, keyPrefix });
      const b = redisAdapterState({ redis: other, keyPrefix });
      const adapter = `shared-${randomUUID()}`;
      const claims = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).claimLoad(adapter, `r${i}`, 5_000)));
      expect(claims.filter(Boolean)).toHaveLength(1);
      expect(await a.acquireLease('ctl-a', 5_000)).toBe(true);
      expect(await b.acquireLease('ctl-b', 5_000)).toBe(false);
      await a.releaseLease('ctl-a');
      await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).recordDemand(adapter)));
      expect((await b.demand()).get(adapter)!.perMinute).toBeGreaterThan(9.9);
    } finally {
      await other.quit();
    }
  });
});
