import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { AdapterStateStore } from '../../../core/state/adapter-state.js';

/**
 * One behaviour suite for every adapter state store, on the store's own clock (the Redis one is the server's):
 * TTLs are real and short. Every test uses names of its own, except the lease (one per store), so each test that
 * takes the lease releases it; `make` may return the same store each time.
 */
export function adapterStateSuite(make: () => AdapterStateStore): void {
  const uid = (): string => randomUUID().slice(0, 8);

  describe('placements', () => {
    it('sets, replaces and removes one (engine, adapter) at a time, keeping state, reason and since', async () => {
      const store = make();
      const e = `engine-${uid()}`;
      await store.setPlacement({ engine: e, adapter: 'a', state: 'loading', since: 1000 });
      await store.setPlacement({ engine: e, adapter: 'b', state: 'resident', since: 2000 });
      await store.setPlacement({ engine: `${e}-2`, adapter: 'a', state: 'failed', reason: "400: Cannot load LoRA adapter 'a'", since: 3000 });
      const mine = async () => (await store.placements()).filter((p) => p.engine.startsWith(e)).sort((x, y) => x.since - y.since);
      expect(await mine()).toEqual([
        { engine: e, adapter: 'a', state: 'loading', since: 1000 },
        { engine: e, adapter: 'b', state: 'resident', since: 2000 },
        { engine: `${e}-2`, adapter: 'a', state: 'failed', reason: "400: Cannot load LoRA adapter 'a'", since: 3000 },
      ]);
      await store.setPlacement({ engine: e, adapter: 'a', state: 'resident', since: 4000 });
      await store.removePlacement(e, 'b');
      await store.removePlacement(e, 'never-there');
      expect(await mine()).toEqual([
        { engine: `${e}-2`, adapter: 'a', state: 'failed', reason: "400: Cannot load LoRA adapter 'a'", since: 3000 },
        { engine: e, adapter: 'a', state: 'resident', since: 4000 },
      ]);
      await store.removePlacement(e, 'a');
      await store.removePlacement(`${e}-2`, 'a');
      expect(await mine()).toEqual([]);
    });

    it('keeps names with separators apart', async () => {
      const store = make();
      const e = `engine:${uid()}/x`;
      await store.setPlacement({ engine: e, adapter: 'org/adapter:v2', state: 'resident', since: 1 });
      expect((await store.placements()).filter((p) => p.engine === e)).toEqual([{ engine: e, adapter: 'org/adapter:v2', state: 'resident', since: 1 }]);
      await store.removePlacement(e, 'org/adapter:v2');
      await expect(store.setPlacement({ engine: 'a\u0000b', adapter: 'x', state: 'resident', since: 1 })).rejects.toThrow(RangeError);
    });
  });

  describe('load claims', () => {
    it('of 20 concurrent claims of one adapter, exactly one wins', async () => {
      const store = make();
      const adapter = `cold-${uid()}`;
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.claimLoad(adapter, `replica-${i}`, 5_000)));
      expect(results.filter(Boolean)).toHaveLength(1);
      // Other adapters are claimed independently.
      expect(await store.claimLoad(`${adapter}-other`, 'replica-0', 5_000)).toBe(true);
      const winner = `replica-${results.indexOf(true)}`;
      await store.releaseLoad(adapter, winner);
      await store.releaseLoad(`${adapter}-other`, 'replica-0');
    });

    it('is released only by its holder, and free again once released or expired', async () => {
      const store = make();
      const adapter = `cold-${uid()}`;
      expect(await store.claimLoad(adapter, 'a', 5_000)).toBe(true);
      await store.releaseLoad(adapter, 'b');
      expect(await store.claimLoad(adapter, 'b', 5_000)).toBe(false);
      expect(await store.claimLoad(adapter, 'a', 5_000)).toBe(false); // a claim is taken once, even by its holder
      await store.releaseLoad(adapter, 'a');
      expect(await store.claimLoad(adapter, 'b', 150)).toBe(true);
      await sleep(250);
      expect(await store.claimLoad(adapter, 'c', 5_000)).toBe(true);
      // b's claim expired and c took it: b's late release must not free c's.
      await store.releaseLoad(adapter, 'b');
      expect(await store.claimLoad(adapter, 'd', 5_000)).toBe(false);
      await store.releaseLoad(adapter, 'c');
    });
  });

  describe('controller lease', () => {
    it('is held by one holder at a time, renewed by it, and taken over only after it expired', async () => {
      const store = make();
      const [a, b] = [`ctl-a-${uid()}`, `ctl-b-${uid()}`];
      expect(await store.acquireLease(a, 500)).toBe(true);
      expect(await store.acquireLease(b, 500)).toBe(false);
      // Renewals keep it past the first TTL.
      for (let i = 0; i < 4; i++) {
        await sleep(150);
        expect(await store.acquireLease(a, 500)).toBe(true);
        expect(await store.acquireLease(b, 500)).toBe(false);
      }
      // a stops renewing (dies): b gets it after the TTL, and a cannot take it back or release it.
      await sleep(650);
      expect(await store.acquireLease(b, 5_000)).toBe(true);
      expect(await store.acquireLease(a, 5_000)).toBe(false);
      await store.releaseLease(a);
      expect(await store.acquireLease(a, 5_000)).toBe(false);
      await store.releaseLease(b);
    });

    it('is free at once when its holder releases it', async () => {
      const store = make();
      const [a, b] = [`ctl-a-${uid()}`, `ctl-b-${uid()}`];
      expect(await store.acquireLease(a, 60_000)).toBe(true);
      await store.releaseLease(a);
      expect(await store.acquireLease(b, 60_000)).toBe(true);
      await store.releaseLease(b);
    });

    it('goes to exactly one of 20 concurrent contenders', async () => {
      const store = make();
      const names = Array.from({ length: 20 }, (_, i) => `ctl-${i}-${uid()}`);
      const results = await Promise.all(names.map((n) => store.acquireLease(n, 5_000)));
      expect(results.filter(Boolean)).toHaveLength(1);
      await store.releaseLease(names[results.indexOf(true)]!);
    });
  });

  describe('demand', () => {
    it('counts requests per adapter over the last minute, with the time of the last one', async () => {
      const store = make();
      const [hot, cold, none] = [`hot-${uid()}`, `cold-${uid()}`, `none-${uid()}`];
      const before = Date.now();
      await Promise.all([...Array.from({ length: 25 }, () => store.recordDemand(hot)), store.recordDemand(cold), store.recordDemand(cold)]);
      const after = Date.now();
      const d = await store.demand();
      // Within a window the count is exact; across a boundary, the previous window weighs a hair under 1.
      expect(d.get(hot)!.perMinute).toBeGreaterThan(24.9);
      expect(d.get(hot)!.perMinute).toBeLessThanOrEqual(25);
      expect(d.get(cold)!.perMinute).toBeGreaterThan(1.99);
      expect(d.get(cold)!.perMinute).toBeLessThanOrEqual(2);
      for (const name of [hot, cold]) {
        // The store's clock (Redis' for Redis) runs on this machine: within a second of ours.
        expect(d.get(name)!.lastUsed).toBeGreaterThanOrEqual(before - 1000);
        expect(d.get(name)!.lastUsed).toBeLessThanOrEqual(after + 1000);
      }
      expect(d.has(none)).toBe(false);
    });
  });
}
