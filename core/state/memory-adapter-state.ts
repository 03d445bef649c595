/**
 * The in-process adapter state store (the embedded default): placements, cold-start claims, the controller lease and
 * demand counters, on an injectable clock. One process is one replica, so "across replicas" means "across callers".
 *
 * Demand is a sliding per-minute estimate from two fixed one-minute windows, as the rate limiter counts: the
 * previous window weighted by how much of it still overlaps the last minute, plus the current window.
 */

import type { AdapterPlacement, AdapterStateStore } from './adapter-state.js';
import { WINDOW_MS } from './rate-limit.js';

const W = WINDOW_MS;

interface DemandCounters {
  start: number;
  curr: number;
  prev: number;
  lastUsed: number;
}

interface Held {
  holder: string;
  expiresAt: number;
}

export function memoryAdapterState(opts: { now?: () => number } = {}): AdapterStateStore {
  const clock = opts.now ?? Date.now;
  const placements = new Map<string, AdapterPlacement>();
  const claims = new Map<string, Held>();
  const demand = new Map<string, DemandCounters>();
  let lease: Held | undefined;

  const now = (): number => Math.floor(clock());

  return {
    async placements() {
      return [...placements.values()];
    },

    async setPlacement(placement) {
      requireName('engine', placement.engine);
      requireName('adapter', placement.adapter);
      placements.set(placementField(placement.engine, placement.adapter), { ...placement });
    },

    async removePlacement(engine, adapter) {
      placements.delete(placementField(engine, adapter));
    },

    async claimLoad(adapter, holder, ttlMs) {
      requireTtl(ttlMs);
      const t = now();
      const held = claims.get(adapter);
      if (held !== undefined && held.expiresAt > t) return false;
      claims.set(adapter, { holder, expiresAt: t + ttlMs });
      // Expired claims of other adapters are dropped as they are met, so the map stays as small as the live ones.
      for (const [name, c] of claims) if (c.expiresAt <= t) claims.delete(name);
      return true;
    },

    async releaseLoad(adapter, holder) {
      // Never someone else's: a claim that expired and was taken over stays with its new holder.
      if (claims.get(adapter)?.holder === holder) claims.delete(adapter);
    },

    async recordDemand(adapter) {
      const t = now();
      const start = t - (t % W);
      let c = demand.get(adapter);
      if (c === undefined) {
        c = { start, curr: 0, prev: 0, lastUsed: t };
        demand.set(adapter, c);
      }
      roll(c, start);
      c.curr += 1;
      if (t > c.lastUsed) c.lastUsed = t;
    },

    async demand() {
      const t = now();
      const start = t - (t % W);
      const out = new Map<string, { perMinute: number; lastUsed: number }>();
      for (const [adapter, c] of demand) {
        roll(c, start);
        out.set(adapter, { perMinute: perMinute(c.prev, c.curr, t - start), lastUsed: c.lastUsed });
      }
      return out;
    },

    async acquireLease(holder, ttlMs) {
      requireTtl(ttlMs);
      const t = now();
      if (lease !== undefined && lease.holder !== holder && lease.expiresAt > t) return false;
      lease = { holder, expiresAt: t + ttlMs };
      return true;
    },

    async releaseLease(holder) {
      if (lease?.holder === holder) lease = undefined;
    },

    async close() {
      placements.clear();
      claims.clear();
      demand.clear();
      lease = undefined;
    },
  };
}

/** The placements hash field (also the Redis one): engine and adapter joined by NUL, which neither name holds. */
export function placementField(engine: string, adapter: string): string {
  return `${engine}\u0000${adapter}`;
}

/** The sliding estimate: the previous window's count weighted by its overlap with the last minute, plus the current. */
export function perMinute(prev: number, curr: number, elapsed: number): number {
  return (prev * (W - elapsed)) / W + curr;
}

export function requireTtl(ttlMs: number): void {
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new RangeError(`adapter state: ttlMs must be a positive integer, got ${ttlMs}`);
}

export function requireName(what: string, name: string): void {
  if (typeof name !== 'string' || name === '' || name.includes('\u0000')) throw new RangeError(`adapter state: ${what} must be a non-empty string without NUL, got ${JSON.stringify(name)}`);
}

function roll(c: DemandCounters, start: number): void {
  if (c.start >= start) return; // a clock that stepped back keeps the window it has
  c.prev = c.start === start - W ? c.curr : 0;
  c.curr = 0;
  c.start = start;
}
