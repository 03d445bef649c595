import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { fallbackRateLimiter } from '../../../core/state/fallback-rate-limiter.js';
import { memoryRateLimiter } from '../../../core/state/memory-rate-limiter.js';
import { RateLimitUnavailableError, WINDOW_MS, type RateLimiter, type Reservation } from '../../../core/state/rate-limit.js';
import { redisRateLimiter } from '../../../core/state/redis-rate-limiter.js';
import { allowed, rateLimitSuite, refused, rule } from './rate-limit.suite.js';

const REDIS_URL = process.env.REDIS_URL;
const W = WINDOW_MS;
// A window start of today's size, so the arithmetic runs on real-sized numbers.
const T0 = Math.floor(Date.now() / W) * W;

function manualClock(start: number): { now: () => number; advance: (ms: number) => void; set: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms), set: (ms) => (t = ms) };
}

describe('memory rate limiter', () => {
  // A fixed clock 15 s into a window: the suite's results do not depend on when it runs.
  rateLimitSuite(() => memoryRateLimiter({ now: () => T0 + 15_000 }));

  describe('sliding window (injected clock)', () => {
    const rules = [rule('tenant', 60, null)];

    it('weights the previous window by how much of it still overlaps the last minute', async () => {
      const clock = manualClock(T0);
      const limiter = memoryRateLimiter({ now: clock.now });
      for (let i = 0; i < 60; i++) allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      refused(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      // 15 s into the next window 3/4 of the previous one overlaps: estimate 45, so 15 more pass.
      clock.set(T0 + W + 15_000);
      const first = allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      expect(first.requests).toEqual({ limit: 60, remaining: 14, resetMs: 2 * W - 15_000 });
      for (let i = 0; i < 14; i++) allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      // 45 + 15 = 60: the next one fits when the previous window's share has dropped by 1, 1 s later.
      expect(refused(await limiter.reserve({ tenantId: 't', rules, tokens: 0 })).retryAfterMs).toBe(1000);
      clock.advance(999);
      refused(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      clock.advance(1);
      allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      expect(refused(await limiter.reserve({ tenantId: 't', rules, tokens: 0 })).retryAfterMs).toBe(1000);
    });

    it('with only the previous window counted, resets when it has slid out', async () => {
      const clock = manualClock(T0);
      const limiter = memoryRateLimiter({ now: clock.now });
      for (let i = 0; i < 60; i++) allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      clock.set(T0 + W + 500);
      // 60 * 59.5/60 = 59.5, + 1 > 60: refused, and the status is the previous window's alone.
      const r = refused(await limiter.reserve({ tenantId: 't', rules, tokens: 0 }));
      expect(r.requests).toEqual({ limit: 60, remaining: 0, resetMs: W - 500 });
      expect(r.retryAfterMs).toBe(500);
      clock.set(T0 + 2 * W);
      expect(allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 0 })).requests).toEqual({ limit: 60, remaining: 59, resetMs: 2 * W });
    });

    it('retryAfterMs is exact when the wait runs into the next window, and is the longest of the failing rules', async () => {
      const clock = manualClock(T0 + 15_000);
      const limiter = memoryRateLimiter({ now: clock.now });
      const two = [rule('tenant', 2, null)];
      allowed(await limiter.reserve({ tenantId: 't', rules: two, tokens: 0 }));
      allowed(await limiter.reserve({ tenantId: 't', rules: two, tokens: 0 }));
      // Both counted now; one more fits when half has slid out: 45 s to the window's end, then 30 s.
      expect(refused(await limiter.reserve({ tenantId: 't', rules: two, tokens: 0 })).retryAfterMs).toBe(75_000);
      clock.advance(74_999);
      refused(await limiter.reserve({ tenantId: 't', rules: two, tokens: 0 }));
      clock.advance(1);
      allowed(await limiter.reserve({ tenantId: 't', rules: two, tokens: 0 }));

      const other = memoryRateLimiter({ now: () => T0 + 15_000 });
      const both = [rule('model:m', null, 100), rule('key:a', 1, null)];
      allowed(await other.reserve({ tenantId: 'u', rules: both, tokens: 100 }));
      // key:a needs its window gone entirely (105 s), model:m half of it (75 s): the longer is the answer.
      expect(refused(await other.reserve({ tenantId: 'u', rules: both, tokens: 50 }))).toMatchObject({ scope: 'key:a', kind: 'requests', retryAfterMs: 105_000 });
    });

    it('settle() corrects the window the tokens were counted in, also once it has become the previous one', async () => {
      const clock = manualClock(T0 + 50_000);
      const limiter = memoryRateLimiter({ now: clock.now });
      const tpm = [rule('tenant', null, 1000)];
      const r = allowed(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 800 }));
      clock.set(T0 + W);
      refused(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 800 }));
      await limiter.settle(r.reservation, 200);
      expect(allowed(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 800 })).tokens).toEqual({ limit: 1000, remaining: 0, resetMs: 2 * W });
      // Two windows on, the reservation weighs nothing any more; correcting it changes nothing and creates nothing.
      clock.set(T0 + 3 * W);
      const size = limiter.size;
      await limiter.settle(r.reservation, 5000);
      expect(limiter.size).toBe(size);
      expect(allowed(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 1000 })).tokens!.remaining).toBe(0);
    });

    it('drops scopes not counted in the last two windows, lazily', async () => {
      const clock = manualClock(T0);
      const limiter = memoryRateLimiter({ now: clock.now });
      allowed(await limiter.reserve({ tenantId: 'a', rules: [rule('tenant', 10, null), rule('key:1', 10, null)], tokens: 0 }));
      expect(limiter.size).toBe(2);
      // A refused call stores nothing.
      refused(await limiter.reserve({ tenantId: 'b', rules: [rule('tenant', 0, null)], tokens: 0 }));
      expect(limiter.size).toBe(2);
      clock.set(T0 + W + 1);
      allowed(await limiter.reserve({ tenantId: 'b', rules: [rule('tenant', 10, null)], tokens: 0 }));
      expect(limiter.size).toBe(3); // a's counts still weigh in this window
      clock.set(T0 + 2 * W);
      allowed(await limiter.reserve({ tenantId: 'c', rules: [rule('tenant', 10, null)], tokens: 0 }));
      expect(limiter.size).toBe(2); // a's are gone, b's still weigh
      clock.set(T0 + 10 * W);
      allowed(await limiter.reserve({ tenantId: 'a', rules: [rule('tenant', 10, null)], tokens: 0 }));
      expect(limiter.size).toBe(1);
    });

    it('a clock that steps back keeps the counts', async () => {
      const clock = manualClock(T0 + 1000);
      const limiter = memoryRateLimiter({ now: clock.now });
      allowed(await limiter.reserve({ tenantId: 't', rules: [rule('tenant', 1, null)], tokens: 0 }));
      clock.set(T0 - 1000);
      refused(await limiter.reserve({ tenantId: 't', rules: [rule('tenant', 1, null)], tokens: 0 }));
    });

    it('rpm 0 refuses every request, with a full window as the wait', async () => {
      const limiter = memoryRateLimiter({ now: () => T0 });
      expect(refused(await limiter.reserve({ tenantId: 't', rules: [rule('tenant', 0, null)], tokens: 0 }))).toMatchObject({ kind: 'requests', tooLarge: false, retryAfterMs: W });
    });

    it('runs on the system clock by default', async () => {
      const limiter = memoryRateLimiter();
      const r = allowed(await limiter.reserve({ tenantId: 't', rules: [rule('tenant', 2, null)], tokens: 0 }));
      expect(Math.abs(r.reservation.windowStart + W / 2 - Date.now())).toBeLessThanOrEqual(W / 2 + 1000);
      expect(r.reservation.store).toBe('local');
    });
  });
});

describe.runIf(REDIS_URL)('Redis rate limiter', () => {
  const keyPrefix = `switchyard-test:rl:${randomUUID()}:`;
  let client: Redis;
  let admin: Redis;
  const keyOf = (tenantId: string, scope: string): string => `${keyPrefix}{${tenantId}}:${scope}`;
  const serverNow = async (): Promise<number> => {
    const [seconds, micros] = await admin.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  };

  beforeAll(async () => {
    // Configured as the gateway configures it.
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

  rateLimitSuite(() => redisRateLimiter({ redis: client, keyPrefix }));

  it('keeps one hash per scope under the tenant hash tag, expiring two windows after its last count', async () => {
    const limiter = redisRateLimiter({ redis: client, keyPrefix });
    const r = allowed(await limiter.reserve({ tenantId: 'acme', rules: [rule('tenant', 10, 1000), rule('key:k', 5, null)], tokens: 70 }));
    expect(r.reservation).toMatchObject({ tenantId: 'acme', scopes: ['tenant', 'key:k'], tokens: 70, store: 'shared' });
    expect(r.reservation.windowStart % W).toBe(0);
    for (const scope of ['tenant', 'key:k']) {
      expect(await admin.hgetall(keyOf('acme', scope))).toMatchObject({ w: String(r.reservation.windowStart), r: '1', t: '70' });
      const ttl = await admin.pttl(keyOf('acme', scope));
      expect(ttl).toBeGreaterThan(2 * W - 5000);
      expect(ttl).toBeLessThanOrEqual(2 * W);
    }
    await limiter.settle(r.reservation, 20);
    expect(await admin.hget(keyOf('acme', 'tenant'), 't')).toBe('20');
    expect(await admin.pttl(keyOf('acme', 'tenant'))).toBeGreaterThan(0);
    await admin.del(keyOf('acme', 'tenant'), keyOf('acme', 'key:k'));
  });

  it('settle() creates no key that has expired, and corrects the previous window when the window has moved on', async () => {
    const limiter = redisRateLimiter({ redis: client, keyPrefix });
    const tenantId = randomUUID();
    const rules = [rule('tenant', null, 1000)];
    const r = allowed(await limiter.reserve({ tenantId, rules, tokens: 100 }));
    await admin.del(keyOf(tenantId, 'tenant'));
    await limiter.settle(r.reservation, 500);
    expect(await admin.exists(keyOf(tenantId, 'tenant'))).toBe(0);

    // Reserved one window earlier: the tokens are now the key's previous window (pt); t is this window's.
    const again = allowed(await limiter.reserve({ tenantId, rules, tokens: 100 }));
    await admin.hset(keyOf(tenantId, 'tenant'), 'pt', 500);
    const earlier: Reservation = { ...again.reservation, windowStart: again.reservation.windowStart - W };
    await limiter.settle(earlier, 20);
    expect(await admin.hmget(keyOf(tenantId, 'tenant'), 't', 'pt')).toEqual(['100', '420']);
    // Two windows back: weighs nothing, changes nothing.
    await limiter.settle({ ...earlier, windowStart: earlier.windowStart - W }, 0);
    expect(await admin.hmget(keyOf(tenantId, 'tenant'), 't', 'pt')).toEqual(['100', '420']);
  });

  it('weights the previous window by its overlap, on the Redis clock', async () => {
    const limiter = redisRateLimiter({ redis: client, keyPrefix });
    for (let attempt = 0; attempt < 3; attempt++) {
      const tenantId = randomUUID();
      const before = await serverNow();
      const start = before - (before % W);
      await admin.hset(keyOf(tenantId, 'tenant'), { w: start - W, r: 30, t: 0, pr: 0, pt: 0 });
      await admin.pexpire(keyOf(tenantId, 'tenant'), 2 * W);
      const r = allowed(await limiter.reserve({ tenantId, rules: [rule('tenant', 60, null)], tokens: 0 }));
      const after = await serverNow();
      if (r.reservation.windowStart !== start) continue; // crossed into another window meanwhile: try again
      // remaining = floor(60 - 30 * (W - elapsed) / W - 1), between its values at the two readings of the clock.
      const remainingAt = (t: number): number => Math.floor(60 - (30 * (W - (t - start))) / W - 1);
      expect(r.requests!.remaining).toBeGreaterThanOrEqual(remainingAt(before));
      expect(r.requests!.remaining).toBeLessThanOrEqual(remainingAt(after));
      expect(r.requests!.resetMs).toBeGreaterThanOrEqual(2 * W - (after - start));
      expect(r.requests!.resetMs).toBeLessThanOrEqual(2 * W - (before - start));
      // The counts moved to the current window: the old one is now the previous.
      expect(await admin.hgetall(keyOf(tenantId, 'tenant'))).toEqual({ w: String(start), r: '1', t: '0', pr: '30', pt: '0' });
      return;
    }
    expect.fail('three window boundaries in a row');
  });

  it('decides on the weighted estimate: a full previous window lets tokens through as it slides out', async () => {
    const limiter = redisRateLimiter({ redis: client, keyPrefix });
    const tpm = 60_000_000; // 1000 tokens slide out per millisecond
    for (let attempt = 0; attempt < 3; attempt++) {
      const tenantId = randomUUID();
      const before = await serverNow();
      const start = before - (before % W);
      if (before === start) continue; // nothing has slid out yet at the first millisecond
      await admin.hset(keyOf(tenantId, 'tenant'), { w: start - W, r: 0, t: tpm, pr: 0, pt: 0 });
      await admin.pexpire(keyOf(tenantId, 'tenant'), 2 * W);
      const r = await limiter.reserve({ tenantId, rules: [rule('tenant', null, tpm)], tokens: 1 });
      const after = await serverNow();
      if (after - (after % W) !== start) continue;
      expect(allowed(r).tokens!.remaining).toBeGreaterThanOrEqual((before - start) * 1000 - 1);
      expect(allowed(r).tokens!.remaining).toBeLessThanOrEqual((after - start) * 1000 - 1);
      return;
    }
    expect.fail('three window boundaries in a row');
  });

  it('replicas on separate connections share the counts', async () => {
    const other = new Redis(REDIS_URL!);
    try {
      const a = redisRateLimiter({ redis: client, keyPrefix });
      const b = redisRateLimiter({ redis: other, keyPrefix });
      const tenantId = randomUUID();
      const rules = [rule('tenant', 60, 10_000)];
      const calls = Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).reserve({ tenantId, rules, tokens: 10 }));
      const results = await Promise.all(calls);
      expect(results.filter((r) => r.allowed)).toHaveLength(60);
      expect(await admin.hmget(keyOf(tenantId, 'tenant'), 'r', 't')).toEqual(['60', '600']);
    } finally {
      await other.quit();
    }
  });
});

/** A shared store that throws while `down`, else answers from an in-process limiter (as 'shared'). */
function flakyShared(): { limiter: RateLimiter; state: { down: boolean } } {
  const inner = memoryRateLimiter();
  const state = { down: true };
  const unavailable = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
  const limiter: RateLimiter = {
    async reserve(req) {
      if (state.down) throw unavailable();
      const r = await inner.reserve(req);
      return r.allowed ? { ...r, reservation: { ...r.reservation, store: 'shared' } } : r;
    },
    async settle(reservation, tokens) {
      if (state.down) throw unavailable();
      await inner.settle(reservation, tokens);
    },
    close: () => inner.close(),
  };
  return { limiter, state };
}

describe('fallback rate limiter', () => {
  const rules = [rule('tenant', 2, null)];

  it('fail-open: while the shared store throws, this replica counts, and each fallback is reported', async () => {
    const { limiter: shared } = flakyShared();
    const onFallback = vi.fn();
    const limiter = fallbackRateLimiter({ shared, local: memoryRateLimiter(), failMode: 'open', onFallback });
    expect(allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 1 })).reservation.store).toBe('local');
    allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 1 }));
    refused(await limiter.reserve({ tenantId: 't', rules, tokens: 1 }));
    expect(onFallback).toHaveBeenCalledTimes(3);
    expect(onFallback.mock.calls[0]![0]).toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('fail-closed: refuses with RateLimitUnavailableError carrying the cause, reports it, and counts nowhere', async () => {
    const { limiter: shared, state } = flakyShared();
    const onFallback = vi.fn();
    const local = memoryRateLimiter();
    const limiter = fallbackRateLimiter({ shared, local, failMode: 'closed', onFallback });
    const err = await limiter.reserve({ tenantId: 't', rules, tokens: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitUnavailableError);
    expect((err as Error).cause).toMatchObject({ code: 'ECONNREFUSED' });
    expect(onFallback).toHaveBeenCalledTimes(1);
    expect(local.size).toBe(0);
    state.down = false;
    expect(allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 1 })).reservation.store).toBe('shared');
  });

  it('returns to the shared store once it answers, and settles each reservation where it was counted', async () => {
    const { limiter: shared, state } = flakyShared();
    const local = memoryRateLimiter();
    const limiter = fallbackRateLimiter({ shared, local, failMode: 'open' });
    const tpm = [rule('tenant', null, 1000)];
    const during = allowed(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 900 }));
    expect(during.reservation.store).toBe('local');
    state.down = false;
    const after = allowed(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 900 }));
    expect(after.reservation.store).toBe('shared');
    const localSettle = vi.spyOn(local, 'settle');
    const sharedSettle = vi.spyOn(shared, 'settle');
    await limiter.settle(during.reservation, 100);
    await limiter.settle(after.reservation, 100);
    expect(localSettle).toHaveBeenCalledExactlyOnceWith(during.reservation, 100);
    expect(sharedSettle).toHaveBeenCalledExactlyOnceWith(after.reservation, 100);
    // Each store got its correction: 900 more fit in either.
    allowed(await local.reserve({ tenantId: 't', rules: tpm, tokens: 900 }));
    allowed(await limiter.reserve({ tenantId: 't', rules: tpm, tokens: 900 }));
    // A shared settle that fails is the caller's to log, not silently moved elsewhere.
    state.down = true;
    await expect(limiter.settle(after.reservation, 0)).rejects.toThrow(/ECONNREFUSED/);
  });

  describe('with an ioredis client on a closed port', () => {
    let dead: Redis;
    beforeAll(() => {
      dead = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
      dead.on('error', () => {}); // connection errors are what this test is about
    });
    afterAll(() => dead.disconnect());

    it('fail-open answers from this replica, call after call', async () => {
      const onFallback = vi.fn();
      const limiter = fallbackRateLimiter({ shared: redisRateLimiter({ redis: dead, keyPrefix: 'x:' }), local: memoryRateLimiter(), failMode: 'open', onFallback });
      for (let i = 0; i < 2; i++) expect(allowed(await limiter.reserve({ tenantId: 't', rules, tokens: 1 })).reservation.store).toBe('local');
      refused(await limiter.reserve({ tenantId: 't', rules, tokens: 1 }));
      expect(onFallback).toHaveBeenCalledTimes(3);
      expect(onFallback.mock.calls[0]![0]).toBeInstanceOf(Error);
    });

    it('fail-closed refuses with RateLimitUnavailableError', async () => {
      const limiter = fallbackRateLimiter({ shared: redisRateLimiter({ redis: dead, keyPrefix: 'x:' }), local: memoryRateLimiter(), failMode: 'closed' });
      for (let i = 0; i < 2; i++) await expect(limiter.reserve({ tenantId: 't', rules, tokens: 1 })).rejects.toBeInstanceOf(RateLimitUnavailableError);
    });
  });

  it.runIf(REDIS_URL)('with real Redis: falls back while the connection is down and uses Redis again once it is back', async () => {
    const keyPrefix = `switchyard-test:rl:${randomUUID()}:`;
    const client = new Redis(REDIS_URL!, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000 });
    client.on('error', () => {});
    await client.connect();
    const tenantId = randomUUID();
    try {
      const onFallback = vi.fn();
      const limiter = fallbackRateLimiter({ shared: redisRateLimiter({ redis: client, keyPrefix }), local: memoryRateLimiter(), failMode: 'open', onFallback });
      const three = [rule('tenant', 3, null)];
      expect(allowed(await limiter.reserve({ tenantId, rules: three, tokens: 0 })).reservation.store).toBe('shared');
      const ended = new Promise((resolve) => client.once('end', resolve));
      client.disconnect();
      expect(allowed(await limiter.reserve({ tenantId, rules: three, tokens: 0 })).reservation.store).toBe('local');
      expect(onFallback).toHaveBeenCalledOnce();
      await ended;
      await client.connect();
      // Redis counted the first call only; the outage's call was this replica's.
      const back = allowed(await limiter.reserve({ tenantId, rules: three, tokens: 0 }));
      expect(back.reservation.store).toBe('shared');
      expect(back.requests!.remaining).toBe(1);
      expect(onFallback).toHaveBeenCalledOnce();
    } finally {
      await client.unlink(`${keyPrefix}{${tenantId}}:tenant`).catch(() => {});
      client.disconnect();
    }
  });
});
