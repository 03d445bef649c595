/**
 * The rate limiter in Redis, shared by every router replica: one script call per reserve() and per settle().
 *
 * Layout: one hash per scope, `<keyPrefix>{<tenantId>}:<scope>`, fields
 *   w  start of the current window (ms, Redis clock)    r, t    its requests and tokens
 *                                                       pr, pt  the previous window's
 * so a call reads and writes one key per rule, all in one cluster slot (the hash tag), all passed as KEYS. The
 * script moves the counters to the current window when it counts; a key expires two windows after its last count,
 * when nothing in it weighs any more. Time is Redis' (TIME, allowed in scripts since effects replication), so
 * replicas with skewed clocks agree on windows.
 *
 * The script makes the same integer check as withinLimits() and answers with the counters, flat integers:
 * [allowed, now, then prev requests, prev tokens, curr requests, curr tokens per rule, after counting]; the
 * answer (statuses, retry-after) is computed here by the code the in-process limiter uses.
 *
 * The client is the caller's (configured with enableOfflineQueue: false and a short commandTimeout, so a down
 * Redis fails fast and the fallback limiter takes over); close() leaves it open.
 */

import type { Redis } from 'ioredis';
import { WINDOW_MS, type RateLimiter, type ReserveRequest, type ReserveResult } from './rate-limit.js';
import { requireTokens, reserveResult } from './memory-rate-limiter.js';

/** KEYS: one per rule. ARGV: window ms, tokens, then rpm and tpm per rule (-1: no limit). */
export const RESERVE_SCRIPT = `
local W = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ws = now - now % W
local left = W - (now - ws)
local reply = {1, now}
local stale = {}
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'w', 'r', 't', 'pr', 'pt')
  local w = tonumber(h[1])
  local pr, pt, cr, ct = 0, 0, 0, 0
  -- A window ahead of ours (the clock stepped back on a failover) keeps its counts rather than losing them.
  if w and w >= ws then
    cr, ct, pr, pt = tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0, tonumber(h[5]) or 0
  elseif w == ws - W then
    pr, pt = tonumber(h[2]) or 0, tonumber(h[3]) or 0
  end
  stale[i] = not (w and w >= ws)
  local rpm, tpm = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  if rpm >= 0 and pr * left + cr * W + W > rpm * W then reply[1] = 0 end
  if tpm >= 0 and pt * left + ct * W + cost * W > tpm * W then reply[1] = 0 end
  local o = 2 + (i - 1) * 4
  reply[o + 1], reply[o + 2], reply[o + 3], reply[o + 4] = pr, pt, cr, ct
end
if reply[1] == 1 then
  for i = 1, #KEYS do
    local o = 2 + (i - 1) * 4
    if stale[i] then
      redis.call('HSET', KEYS[i], 'w', ws, 'r', 1, 't', ARGV[2], 'pr', reply[o + 1], 'pt', reply[o + 2])
    else
      redis.call('HINCRBY', KEYS[i], 'r', 1)
      redis.call('HINCRBY', KEYS[i], 't', ARGV[2])
    end
    redis.call('PEXPIRE', KEYS[i], 2 * W)
    reply[o + 3] = reply[o + 3] + 1
    reply[o + 4] = reply[o + 4] + cost
  end
end
return reply
`;

/**
 * KEYS: the reservation's scopes. ARGV: window ms, the reservation's window start, tokens to add (may be negative).
 * Only keys that still hold that window (as current or previous) change, so no key is created, and none loses its
 * TTL (HSET on an existing key keeps it).
 */
export const SETTLE_SCRIPT = `
local W = tonumber(ARGV[1])
local ws = tonumber(ARGV[2])
local delta = tonumber(ARGV[3])
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'w', 't', 'pt')
  local w = tonumber(h[1])
  local field, v
  if w == ws then
    field, v = 't', tonumber(h[2]) or 0
  elseif w == ws + W then
    field, v = 'pt', tonumber(h[3]) or 0
  end
  if field then
    v = v + delta
    if v < 0 then v = 0 end
    redis.call('HSET', KEYS[i], field, v)
  end
end
return 0
`;

interface RateCommands {
  switchyardRateReserve(...args: (string | number)[]): Promise<number[]>;
  switchyardRateSettle(...args: (string | number)[]): Promise<number>;
}

export function redisRateLimiter(opts: { redis: Redis; keyPrefix: string }): RateLimiter {
  const prefix = opts.keyPrefix;
  // Defined once per client; ioredis sends EVALSHA and falls back to EVAL when Redis lacks the script. No
  // numberOfKeys: the key count is the first argument of each call.
  if (!('switchyardRateReserve' in opts.redis)) {
    opts.redis.defineCommand('switchyardRateReserve', { lua: RESERVE_SCRIPT });
    opts.redis.defineCommand('switchyardRateSettle', { lua: SETTLE_SCRIPT });
  }
  const client = opts.redis as Redis & RateCommands;

  return {
    async reserve(req: ReserveRequest): Promise<ReserveResult> {
      requireTokens(req.tokens);
      const rules = req.rules;
      const n = rules.length;
      if (n === 0) {
        const now = Date.now();
        return reserveResult(req, [], 0, now - (now % WINDOW_MS), now % WINDOW_MS, true, 'shared');
      }
      requireConnection(client);
      const base = `${prefix}{${req.tenantId}}:`;
      const args = new Array<string | number>(3 + n * 3);
      args[0] = n;
      args[n + 1] = WINDOW_MS;
      args[n + 2] = req.tokens;
      for (let i = 0; i < n; i++) {
        const rule = rules[i]!;
        args[i + 1] = base + rule.scope;
        args[n + 3 + i * 2] = rule.rpm ?? -1;
        args[n + 4 + i * 2] = rule.tpm ?? -1;
      }
      const reply = await client.switchyardRateReserve(...args);
      const now = reply[1]!;
      return reserveResult(req, reply, 2, now - (now % WINDOW_MS), now % WINDOW_MS, reply[0] === 1, 'shared');
    },

    async settle(reservation, actualTokens) {
      requireTokens(actualTokens);
      const delta = actualTokens - reservation.tokens;
      const n = reservation.scopes.length;
      if (delta === 0 || n === 0) return;
      requireConnection(client);
      const base = `${prefix}{${reservation.tenantId}}:`;
      const args = new Array<string | number>(4 + n);
      args[0] = n;
      for (let i = 0; i < n; i++) args[i + 1] = base + reservation.scopes[i]!;
      args[n + 1] = WINDOW_MS;
      args[n + 2] = reservation.windowStart;
      args[n + 3] = delta;
      await client.switchyardRateSettle(...args);
    },

    async close() {
      // The client is the caller's.
    },
  };
}

/** Fails at once while the connection is down rather than waiting for a queue or a timeout. */
function requireConnection(client: Redis): void {
  const status = client.status;
  if (status === 'reconnecting' || status === 'close' || status === 'end') throw new Error(`rate limit: Redis is unavailable (${status})`);
}
