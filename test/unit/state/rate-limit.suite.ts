import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { WINDOW_MS, type LimitRule, type RateLimiter, type ReserveResult } from '../../../core/state/rate-limit.js';

const W = WINDOW_MS;

export const rule = (scope: string, rpm: number | null, tpm: number | null): LimitRule => ({ scope, rpm, tpm });

/** Narrows a result for the assertions that follow; fails the test with the result when it is the other kind. */
export function allowed(result: ReserveResult): Extract<ReserveResult, { allowed: true }> {
  if (!result.allowed) expect.fail(`expected allowed, got ${JSON.stringify(result)}`);
  return result;
}

export function refused(result: ReserveResult): Extract<ReserveResult, { allowed: false }> {
  if (result.allowed) expect.fail(`expected refused, got ${JSON.stringify(result)}`);
  return result;
}

/**
 * One behaviour suite for every store. It holds whatever the store's clock says (the Redis one is the server's):
 * a test takes milliseconds, so a window boundary crossed mid-test leaves the previous window weighted at almost 1
 * and every assertion below still true; reset times are checked as ranges. Exact timings are the in-process
 * limiter's injected-clock tests. Every test uses a tenant of its own, so a store may be shared between tests.
 */
export function rateLimitSuite(make: () => RateLimiter): void {
  const tenant = (): string => `t-${randomUUID()}`;

  describe('requests per minute', () => {
    it('of 200 concurrent calls at rpm 60, exactly 60 pass', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', 60, null)];
      const results = await Promise.all(Array.from({ length: 200 }, () => limiter.reserve({ tenantId, rules, tokens: 10 })));
      expect(results.filter((r) => r.allowed)).toHaveLength(60);
      for (const r of results.filter((x) => !x.allowed)) {
        expect(refused(r)).toMatchObject({ scope: 'tenant', kind: 'requests', tooLarge: false, requests: { limit: 60, remaining: 0 } });
        expect(refused(r).retryAfterMs).toBeGreaterThan(0);
      }
      expect(new Set(results.filter((r) => r.allowed).map((r) => r.requests!.remaining)).size).toBe(60);
      expect(refused(await limiter.reserve({ tenantId, rules, tokens: 0 })).requests!.remaining).toBe(0);
    });

    it('retryAfterMs is positive and no longer than the counted window needs to slide out', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', 2, null)];
      allowed(await limiter.reserve({ tenantId, rules, tokens: 1 }));
      allowed(await limiter.reserve({ tenantId, rules, tokens: 1 }));
      const r = refused(await limiter.reserve({ tenantId, rules, tokens: 1 }));
      // Two counted this window: one more fits once half of them has slid out, i.e. half-way into the next window.
      expect(r.retryAfterMs).toBeGreaterThan(W / 2);
      expect(r.retryAfterMs).toBeLessThanOrEqual(1.5 * W);
      expect(r.tooLarge).toBe(false);
    });
  });

  describe('tokens per minute', () => {
    it('refuses a reservation that would pass tpm, and admits up to exactly the limit', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', null, 1000)];
      expect(allowed(await limiter.reserve({ tenantId, rules, tokens: 600 })).tokens).toMatchObject({ limit: 1000, remaining: 400 });
      const r = refused(await limiter.reserve({ tenantId, rules, tokens: 500 }));
      expect(r).toMatchObject({ scope: 'tenant', kind: 'tokens', tooLarge: false, tokens: { limit: 1000, remaining: 400 }, requests: undefined });
      expect(r.retryAfterMs).toBeGreaterThan(0);
      expect(r.retryAfterMs).toBeLessThanOrEqual(2 * W);
      expect(allowed(await limiter.reserve({ tenantId, rules, tokens: 400 })).tokens!.remaining).toBe(0);
      refused(await limiter.reserve({ tenantId, rules, tokens: 1 }));
      // A request that reserves no tokens still fits a tpm rule at its limit.
      allowed(await limiter.reserve({ tenantId, rules, tokens: 0 }));
    });

    it('settle() with a smaller actual frees the difference for the next request', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', 10, 1000)];
      const first = allowed(await limiter.reserve({ tenantId, rules, tokens: 800 }));
      refused(await limiter.reserve({ tenantId, rules, tokens: 300 }));
      await limiter.settle(first.reservation, 500);
      const second = allowed(await limiter.reserve({ tenantId, rules, tokens: 300 }));
      expect(second.tokens).toMatchObject({ limit: 1000, remaining: 200 });
      // settle() changes tokens only: both requests still count.
      expect(second.requests).toMatchObject({ limit: 10, remaining: 8 });
      refused(await limiter.reserve({ tenantId, rules, tokens: 201 }));
    });

    it('settle() with a larger actual counts it', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', null, 1000)];
      const first = allowed(await limiter.reserve({ tenantId, rules, tokens: 100 }));
      await limiter.settle(first.reservation, 900);
      expect(refused(await limiter.reserve({ tenantId, rules, tokens: 101 })).tokens!.remaining).toBe(100);
      expect(allowed(await limiter.reserve({ tenantId, rules, tokens: 100 })).tokens!.remaining).toBe(0);
    });

    it('settle() never takes a counter below 0', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', null, 1000)];
      const first = allowed(await limiter.reserve({ tenantId, rules, tokens: 100 }));
      await limiter.settle(first.reservation, 0);
      await limiter.settle(first.reservation, 0); // a second correction would go to -100 unclamped
      expect(allowed(await limiter.reserve({ tenantId, rules, tokens: 1000 })).tokens!.remaining).toBe(0);
      refused(await limiter.reserve({ tenantId, rules, tokens: 1 }));
    });

    it('tooLarge when one request asks for more than tpm; it counts nothing and wins over other refusals', async () => {
      const limiter = make();
      const tenantId = tenant();
      const r = refused(await limiter.reserve({ tenantId, rules: [rule('tenant', null, 1000)], tokens: 1001 }));
      expect(r).toMatchObject({ scope: 'tenant', kind: 'tokens', tooLarge: true });
      expect(r.retryAfterMs).toBeGreaterThan(0);
      // Nothing counted yet: the full allowance, nothing to wait for.
      expect(r.tokens).toEqual({ limit: 1000, remaining: 1000, resetMs: 0 });
      allowed(await limiter.reserve({ tenantId, rules: [rule('tenant', null, 1000)], tokens: 1000 }));
      // The tenant is now out of tokens too, but waiting would not help the per-model one: that is what is reported.
      const both = refused(await limiter.reserve({ tenantId, rules: [rule('tenant', null, 1000), rule('model:m', null, 50)], tokens: 60 }));
      expect(both).toMatchObject({ scope: 'model:m', kind: 'tokens', tooLarge: true });
    });

    it('rejects token counts that are negative or not whole', async () => {
      const limiter = make();
      const rules = [rule('tenant', null, 1000)];
      await expect(limiter.reserve({ tenantId: tenant(), rules, tokens: -1 })).rejects.toBeInstanceOf(RangeError);
      await expect(limiter.reserve({ tenantId: tenant(), rules, tokens: 1.5 })).rejects.toBeInstanceOf(RangeError);
      const r = allowed(await limiter.reserve({ tenantId: tenant(), rules, tokens: 1 }));
      await expect(limiter.settle(r.reservation, Number.NaN)).rejects.toBeInstanceOf(RangeError);
    });
  });

  describe('several scopes', () => {
    it('checks per-key and per-model rules together: the tighter refuses, and a refused call counts nowhere', async () => {
      const limiter = make();
      const tenantId = tenant();
      const key = rule('key:k1', 5, 1000);
      const model = rule('key:k1:model:m', 2, 300);
      allowed(await limiter.reserve({ tenantId, rules: [key, model], tokens: 100 }));
      const second = allowed(await limiter.reserve({ tenantId, rules: [key, model], tokens: 100 }));
      // The tightest scope of each kind is reported.
      expect(second.requests).toMatchObject({ limit: 2, remaining: 0 });
      expect(second.tokens).toMatchObject({ limit: 300, remaining: 100 });
      expect(refused(await limiter.reserve({ tenantId, rules: [key, model], tokens: 100 }))).toMatchObject({ scope: 'key:k1:model:m', kind: 'requests' });
      // The refused call reserved neither a request nor tokens on the key: 5 - 2 - 1 and 1000 - 200 - 100 left.
      const keyOnly = allowed(await limiter.reserve({ tenantId, rules: [key], tokens: 100 }));
      expect(keyOnly.requests).toMatchObject({ limit: 5, remaining: 2 });
      expect(keyOnly.tokens).toMatchObject({ limit: 1000, remaining: 700 });
    });

    it('a tokens refusal in one scope leaves the other scopes untouched', async () => {
      const limiter = make();
      const tenantId = tenant();
      const key = rule('key:k1', null, 1000);
      const model = rule('model:m', null, 300);
      allowed(await limiter.reserve({ tenantId, rules: [key, model], tokens: 200 }));
      expect(refused(await limiter.reserve({ tenantId, rules: [key, model], tokens: 200 }))).toMatchObject({ scope: 'model:m', kind: 'tokens', tooLarge: false });
      expect(allowed(await limiter.reserve({ tenantId, rules: [key], tokens: 800 })).tokens!.remaining).toBe(0);
    });

    it('reports limit, remaining and reset of the scope with the least remaining of each kind', async () => {
      const limiter = make();
      const tenantId = tenant();
      const rules = [rule('tenant', 100, 10_000), rule('key:k', 10, null), rule('model:m', null, 1000)];
      const r = allowed(await limiter.reserve({ tenantId, rules, tokens: 100 }));
      expect(r.requests).toMatchObject({ limit: 10, remaining: 9 });
      expect(r.tokens).toMatchObject({ limit: 1000, remaining: 900 });
      // Counted in the current window: back to the full allowance once the next window has passed too.
      for (const s of [r.requests!, r.tokens!]) {
        expect(s.resetMs).toBeGreaterThan(W);
        expect(s.resetMs).toBeLessThanOrEqual(2 * W);
      }
      const two = allowed(await limiter.reserve({ tenantId, rules, tokens: 50 }));
      expect(two.requests!.remaining).toBe(8);
      expect(two.tokens!.remaining).toBe(850);
      // A scope with no limit of a kind reports nothing of that kind.
      const rpmOnly = allowed(await limiter.reserve({ tenantId: tenant(), rules: [rule('tenant', 3, null)], tokens: 5 }));
      expect(rpmOnly.tokens).toBeUndefined();
      expect(rpmOnly.requests).toMatchObject({ limit: 3, remaining: 2 });
    });

    it('no rules: allowed, nothing to report, and settle() is a no-op', async () => {
      const limiter = make();
      const r = allowed(await limiter.reserve({ tenantId: tenant(), rules: [], tokens: 100 }));
      expect(r.requests).toBeUndefined();
      expect(r.tokens).toBeUndefined();
      await limiter.settle(r.reservation, 5);
    });

    it('tenants are counted apart, even under the same scope names', async () => {
      const limiter = make();
      const rules = [rule('tenant', 1, null)];
      const a = tenant();
      allowed(await limiter.reserve({ tenantId: a, rules, tokens: 1 }));
      refused(await limiter.reserve({ tenantId: a, rules, tokens: 1 }));
      allowed(await limiter.reserve({ tenantId: tenant(), rules, tokens: 1 }));
    });
  });
}
