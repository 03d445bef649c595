/**
 * The adapter state store in Redis, shared by every router replica and every adapters controller.
 *
 * Layout (every key under one hash tag, so the multi-key-free scripts below stay in one cluster slot and a
 * SCAN for `<keyPrefix>{adapters}:*` finds everything):
 *   <keyPrefix>{adapters}:placements        hash, field `<engine>\0<adapter>` -> JSON {state, since, reason?}
 *   <keyPrefix>{adapters}:claim:<adapter>   string holder, SET NX PX: the cold-start load claim
 *   <keyPrefix>{adapters}:lease             string holder, PX: the controller lease
 *   <keyPrefix>{adapters}:demand            hash, field `<adapter>` -> "windowStart:curr:prev:lastUsed"
 *
 * Claims and the lease are released by compare-and-delete and renewed by compare-and-renew scripts, so a holder
 * whose time ran out and was replaced can never release or extend its successor's. Demand is the rate limiter's
 * sliding counter (two fixed one-minute windows, the previous weighted by its overlap) kept per adapter in one
 * field with the last request's time; windows and lastUsed are on Redis' clock (TIME), so replicas with skewed
 * clocks count alike. A field is as long-lived as its adapter (one per adapter ever requested): lastUsed is what
 * least-recently-used eviction needs, hours later too.
 *
 * The client is the caller's; close() leaves it open.
 */

import type { Redis } from 'ioredis';
import type { AdapterPlacement, AdapterState, AdapterStateStore } from './adapter-state.js';
import { perMinute, placementField, requireName, requireTtl } from './memory-adapter-state.js';
import { WINDOW_MS } from './rate-limit.js';

/** KEYS[1]: the lease. ARGV: holder, ttl ms. 1 when `holder` holds it afterwards (taken, or renewed). */
export const LEASE_ACQUIRE_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;

/** KEYS[1]: a lease or claim. ARGV: holder. Deletes it only while `holder` holds it. */
export const COMPARE_AND_DELETE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

/**
 * KEYS[1]: the demand hash. ARGV: adapter, window ms. Counts one request in the adapter's current window (moving
 * the counters on when the window changed) and stamps lastUsed.
 */
export const RECORD_DEMAND_SCRIPT = `
local W = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ws = now - now % W
local v = redis.call('HGET', KEYS[1], ARGV[1])
local s, c, p, u = ws, 0, 0, now
if v then
  local a, b, d, e = string.match(v, '^(%d+):(%d+):(%d+):(%d+)$')
  if a then
    s, c, p, u = tonumber(a), tonumber(b), tonumber(d), tonumber(e)
    if s < ws then
      if s == ws - W then p = c else p = 0 end
      c = 0
      s = ws
    end
    if now > u then u = now end
  end
end
c = c + 1
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d:%d:%d', s, c, p, u))
return c
`;

/** KEYS[1]: the demand hash. Replies [now, then adapter, packed counters per field]. */
export const READ_DEMAND_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local reply = redis.call('HGETALL', KEYS[1])
table.insert(reply, 1, now)
return reply
`;

interface AdapterCommands {
  switchyardAdapterLease(key: string, holder: string, ttlMs: number): Promise<number>;
  switchyardAdapterRelease(key: string, holder: string): Promise<number>;
  switchyardAdapterRecordDemand(key: string, adapter: string, windowMs: number): Promise<number>;
  switchyardAdapterReadDemand(key: string): Promise<(string | number)[]>;
}

const STATES: ReadonlySet<string> = new Set<AdapterState>(['loading', 'resident', 'unloading', 'failed']);

export function redisAdapterState(opts: { redis: Redis; keyPrefix: string }): AdapterStateStore {
  const base = `${opts.keyPrefix}{adapters}:`;
  const placementsKey = `${base}placements`;
  const leaseKey = `${base}lease`;
  const demandKey = `${base}demand`;
  const claimKey = (adapter: string): string => `${base}claim:${adapter}`;
  // Defined once per client; ioredis sends EVALSHA and falls back to EVAL when Redis lacks the script.
  if (!('switchyardAdapterLease' in opts.redis)) {
    opts.redis.defineCommand('switchyardAdapterLease', { numberOfKeys: 1, lua: LEASE_ACQUIRE_SCRIPT });
    opts.redis.defineCommand('switchyardAdapterRelease', { numberOfKeys: 1, lua: COMPARE_AND_DELETE_SCRIPT });
    opts.redis.defineCommand('switchyardAdapterRecordDemand', { numberOfKeys: 1, lua: RECORD_DEMAND_SCRIPT });
    opts.redis.defineCommand('switchyardAdapterReadDemand', { numberOfKeys: 1, lua: READ_DEMAND_SCRIPT });
  }
  const client = opts.redis as Redis & AdapterCommands;

  return {
    async placements() {
      requireConnection(client);
      const all = await client.hgetall(placementsKey);
      const out: AdapterPlacement[] = [];
      for (const [field, json] of Object.entries(all)) {
        const p = parsePlacement(field, json);
        if (p !== undefined) out.push(p);
      }
      return out;
    },

    async setPlacement(placement) {
      requireName('engine', placement.engine);
      requireName('adapter', placement.adapter);
      requireConnection(client);
      const value: { state: AdapterState; since: number; reason?: string } = { state: placement.state, since: placement.since };
      if (placement.reason !== undefined) value.reason = placement.reason;
      await client.hset(placementsKey, placementField(placement.engine, placement.adapter), JSON.stringify(value));
    },

    async removePlacement(engine, adapter) {
      requireConnection(client);
      await client.hdel(placementsKey, placementField(engine, adapter));
    },

    async claimLoad(adapter, holder, ttlMs) {
      requireTtl(ttlMs);
      requireConnection(client);
      return (await client.set(claimKey(adapter), holder, 'PX', ttlMs, 'NX')) === 'OK';
    },

    async releaseLoad(adapter, holder) {
      requireConnection(client);
      await client.switchyardAdapterRelease(claimKey(adapter), holder);
    },

    async recordDemand(adapter) {
      requireName('adapter', adapter);
      requireConnection(client);
      await client.switchyardAdapterRecordDemand(demandKey, adapter, WINDOW_MS);
    },

    async demand() {
      requireConnection(client);
      const reply = await client.switchyardAdapterReadDemand(demandKey);
      const now = Number(reply[0]);
      const ws = now - (now % WINDOW_MS);
      const out = new Map<string, { perMinute: number; lastUsed: number }>();
      for (let i = 1; i + 1 < reply.length; i += 2) {
        const m = /^(\d+):(\d+):(\d+):(\d+)$/.exec(String(reply[i + 1]));
        if (m === null) continue;
        const [start, curr, prev, lastUsed] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
        // Move the counters to the current window as the next record would, without writing.
        let p = prev;
        let c = curr;
        if (start < ws) {
          p = start === ws - WINDOW_MS ? curr : 0;
          c = 0;
        }
        out.set(String(reply[i]), { perMinute: perMinute(p, c, start > ws ? 0 : now - ws), lastUsed });
      }
      return out;
    },

    async acquireLease(holder, ttlMs) {
      requireTtl(ttlMs);
      requireConnection(client);
      return (await client.switchyardAdapterLease(leaseKey, holder, ttlMs)) === 1;
    },

    async releaseLease(holder) {
      requireConnection(client);
      await client.switchyardAdapterRelease(leaseKey, holder);
    },

    async close() {
      // The client is the caller's.
    },
  };
}

function parsePlacement(field: string, json: string): AdapterPlacement | undefined {
  const nul = field.indexOf('\u0000');
  if (nul <= 0 || nul === field.length - 1) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const { state, since, reason } = v as { state?: unknown; since?: unknown; reason?: unknown };
  if (typeof state !== 'string' || !STATES.has(state) || typeof since !== 'number') return undefined;
  const placement: { engine: string; adapter: string; state: AdapterState; since: number; reason?: string } = {
    engine: field.slice(0, nul),
    adapter: field.slice(nul + 1),
    state: state as AdapterState,
    since,
  };
  if (typeof reason === 'string') placement.reason = reason;
  return placement;
}

/** Fails at once while the connection is down rather than waiting for a queue or a timeout. */
function requireConnection(client: Redis): void {
  const status = client.status;
  if (status === 'reconnecting' || status === 'close' || status === 'end') throw new Error(`adapter state: Redis is unavailable (${status})`);
}
