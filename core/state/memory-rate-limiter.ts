/**
 * The in-process rate limiter (embedded default, and the fail-open fallback), and the sliding-window arithmetic
 * that the Redis limiter shares: its Lua script makes the same check on the same counters and hands them back, and
 * reserveResult() below turns them into the answer, so both stores answer alike to the millisecond.
 *
 * Estimates are kept scaled by WINDOW_MS (prev * (W - elapsed) + curr * W) so that every comparison is exact
 * integer arithmetic in doubles, the same in JavaScript and in Redis' Lua: no store lets one more request through
 * because of a rounding the other does not make.
 */

import { WINDOW_MS, type LimitRule, type LimitStatus, type RateLimiter, type ReserveRequest, type ReserveResult } from './rate-limit.js';

const W = WINDOW_MS;

/**
 * Counters of one decision, four per rule in rule order (the Redis script's reply has the same layout after its
 * first two entries): previous window's requests and tokens, then the current window's.
 */
export const PREV_REQUESTS = 0;
export const PREV_TOKENS = 1;
export const CURR_REQUESTS = 2;
export const CURR_TOKENS = 3;

/** One scope's counters: the current window (start) and the one before it. */
interface ScopeCounters {
  start: number;
  requests: number;
  tokens: number;
  prevRequests: number;
  prevTokens: number;
}

/** The in-process limiter; `size` (scopes held) lets tests check that memory stays bounded. */
export interface MemoryRateLimiter extends RateLimiter {
  readonly size: number;
}

export function memoryRateLimiter(opts: { now?: () => number } = {}): MemoryRateLimiter {
  const clock = opts.now ?? Date.now;
  // tenant -> scope -> counters: two lookups and no key string built per rule.
  const tenants = new Map<string, Map<string, ScopeCounters>>();
  let lastNow = 0;
  let sweptStart = 0;

  // A clock that steps back (NTP) must not make a window's counts vanish: time only moves forward here.
  const now = (): number => {
    const t = Math.floor(clock());
    if (t > lastNow) lastNow = t;
    return lastNow;
  };

  return {
    get size() {
      let n = 0;
      for (const scopes of tenants.values()) n += scopes.size;
      return n;
    },

    async reserve(req: ReserveRequest): Promise<ReserveResult> {
      requireTokens(req.tokens);
      const t = now();
      const start = t - (t % W);
      const elapsed = t - start;
      // Lazily, once per window: scopes not counted in this window or the previous one no longer matter.
      if (start > sweptStart) {
        sweep(tenants, start);
        sweptStart = start;
      }
      const rules = req.rules;
      const n = rules.length;
      let scopes = tenants.get(req.tenantId);
      const counts = new Array<number>(n * 4);
      for (let i = 0; i < n; i++) {
        const c = scopes?.get(rules[i]!.scope);
        if (c !== undefined) roll(c, start);
        counts[i * 4 + PREV_REQUESTS] = c === undefined ? 0 : c.prevRequests;
        counts[i * 4 + PREV_TOKENS] = c === undefined ? 0 : c.prevTokens;
        counts[i * 4 + CURR_REQUESTS] = c === undefined ? 0 : c.requests;
        counts[i * 4 + CURR_TOKENS] = c === undefined ? 0 : c.tokens;
      }
      const allowed = withinLimits(rules, req.tokens, counts, 0, elapsed);
      if (allowed && n > 0) {
        if (scopes === undefined) {
          scopes = new Map();
          tenants.set(req.tenantId, scopes);
        }
        for (let i = 0; i < n; i++) {
          const scope = rules[i]!.scope;
          let c = scopes.get(scope);
          if (c === undefined) {
            c = { start, requests: 0, tokens: 0, prevRequests: 0, prevTokens: 0 };
            scopes.set(scope, c);
          }
          c.requests += 1;
          c.tokens += req.tokens;
          counts[i * 4 + CURR_REQUESTS]! += 1;
          counts[i * 4 + CURR_TOKENS]! += req.tokens;
        }
      }
      return reserveResult(req, counts, 0, start, elapsed, allowed, 'local');
    },

    async settle(reservation, actualTokens) {
      requireTokens(actualTokens);
      const delta = actualTokens - reservation.tokens;
      const scopes = tenants.get(reservation.tenantId);
      if (delta === 0 || scopes === undefined) return;
      for (const scope of reservation.scopes) {
        const c = scopes.get(scope);
        if (c === undefined) continue;
        // The window the tokens were counted in may since have become the previous one; older, it counts no more.
        if (c.start === reservation.windowStart) c.tokens = Math.max(0, c.tokens + delta);
        else if (c.start === reservation.windowStart + W) c.prevTokens = Math.max(0, c.prevTokens + delta);
      }
    },

    async close() {
      tenants.clear();
    },
  };
}

/** Moves a scope's counters to the window starting at `start` (no change in what they count). */
function roll(c: ScopeCounters, start: number): void {
  if (c.start === start) return;
  if (c.start === start - W) {
    c.prevRequests = c.requests;
    c.prevTokens = c.tokens;
  } else {
    c.prevRequests = 0;
    c.prevTokens = 0;
  }
  c.requests = 0;
  c.tokens = 0;
  c.start = start;
}

function sweep(tenants: Map<string, Map<string, ScopeCounters>>, start: number): void {
  for (const [tenantId, scopes] of tenants) {
    for (const [scope, c] of scopes) if (c.start < start - W) scopes.delete(scope);
    if (scopes.size === 0) tenants.delete(tenantId);
  }
}

/** Token counts are whole and non-negative: the scaled arithmetic is exact only on integers. */
export function requireTokens(tokens: number): void {
  if (!Number.isSafeInteger(tokens) || tokens < 0) throw new RangeError(`rate limit: tokens must be a non-negative integer, got ${tokens}`);
}

/** Whether one more request of `tokens` fits every rule (the check the Redis script makes too). */
export function withinLimits(rules: readonly LimitRule[], tokens: number, counts: ArrayLike<number>, offset: number, elapsed: number): boolean {
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const o = offset + i * 4;
    if (rule.rpm !== null && waitFor(counts[o + PREV_REQUESTS]!, counts[o + CURR_REQUESTS]!, 1, rule.rpm, elapsed) !== 0) return false;
    if (rule.tpm !== null && waitFor(counts[o + PREV_TOKENS]!, counts[o + CURR_TOKENS]!, tokens, rule.tpm, elapsed) !== 0) return false;
  }
  return true;
}

const NEVER = -1;

/**
 * Milliseconds until `cost` more fits under `limit` with no other traffic: 0 if it fits now, NEVER if it cannot.
 * Within the current window only prev's share decays; past its end curr becomes prev and decays in turn.
 */
function waitFor(prev: number, curr: number, cost: number, limit: number, elapsed: number): number {
  if (prev * (W - elapsed) + curr * W + cost * W <= limit * W) return 0;
  if (cost > limit) return NEVER;
  // What prev's decayed share may still weigh for the cost to fit in this window (prev > 0 here, or it would fit).
  const room = limit - cost - curr;
  const wait = room >= 0 ? W - elapsed - Math.floor((room * W) / prev) : W - elapsed + Math.max(0, W - Math.floor(((limit - cost) * W) / curr));
  return Math.max(1, wait);
}

/** Builds the answer from the counters as they stand after the decision (counted, if allowed). */
export function reserveResult(
  req: ReserveRequest,
  counts: ArrayLike<number>,
  offset: number,
  windowStart: number,
  elapsed: number,
  allowed: boolean,
  store: 'shared' | 'local',
): ReserveResult {
  const rules = req.rules;
  const requests = tightest(rules, counts, offset, elapsed, PREV_REQUESTS);
  const tokens = tightest(rules, counts, offset, elapsed, PREV_TOKENS);
  if (allowed) {
    const scopes = new Array<string>(rules.length);
    for (let i = 0; i < rules.length; i++) scopes[i] = rules[i]!.scope;
    return { allowed: true, reservation: { tenantId: req.tenantId, scopes, tokens: req.tokens, windowStart, store }, requests, tokens };
  }
  // Report what the client can act on: a request that waiting cannot let through first, else the longest wait
  // (after which every rule passes, other traffic aside).
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    // A full window as the wait: no shorter one helps, and clients that honour Retry-After do not hammer the gateway.
    if (rule.tpm !== null && req.tokens > rule.tpm) return { allowed: false, scope: rule.scope, kind: 'tokens', tooLarge: true, retryAfterMs: W, requests, tokens };
  }
  let scope = rules[0]?.scope ?? '';
  let kind: 'requests' | 'tokens' = 'requests';
  let retryAfterMs = 0;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const o = offset + i * 4;
    if (rule.rpm !== null) {
      // rpm 0 never lets a request through; not "too large" (a tokens notion), so it reads as a full window's wait.
      const wait = waitFor(counts[o + PREV_REQUESTS]!, counts[o + CURR_REQUESTS]!, 1, rule.rpm, elapsed);
      const ms = wait === NEVER ? W : wait;
      if (ms > retryAfterMs) {
        retryAfterMs = ms;
        scope = rule.scope;
        kind = 'requests';
      }
    }
    if (rule.tpm !== null) {
      const wait = waitFor(counts[o + PREV_TOKENS]!, counts[o + CURR_TOKENS]!, req.tokens, rule.tpm, elapsed);
      if (wait > retryAfterMs) {
        retryAfterMs = wait;
        scope = rule.scope;
        kind = 'tokens';
      }
    }
  }
  return { allowed: false, scope, kind, tooLarge: false, retryAfterMs: Math.max(1, retryAfterMs), requests, tokens };
}

/** The status of the scope with the least remaining among the rules with that kind of limit. */
function tightest(rules: readonly LimitRule[], counts: ArrayLike<number>, offset: number, elapsed: number, kind: typeof PREV_REQUESTS | typeof PREV_TOKENS): LimitStatus | undefined {
  let best = -1;
  let bestRemaining = 0;
  for (let i = 0; i < rules.length; i++) {
    const limit = kind === PREV_REQUESTS ? rules[i]!.rpm : rules[i]!.tpm;
    if (limit === null) continue;
    const o = offset + i * 4 + kind;
    const remaining = Math.max(0, Math.floor((limit * W - counts[o]! * (W - elapsed) - counts[o + 2]! * W) / W));
    if (best < 0 || remaining < bestRemaining) {
      best = i;
      bestRemaining = remaining;
    }
  }
  if (best < 0) return undefined;
  const o = offset + best * 4 + kind;
  // The estimate reaches 0 when the last counted window has fully slid out: curr's at the end of the next window.
  const resetMs = counts[o + 2]! > 0 ? 2 * W - elapsed : counts[o]! > 0 ? W - elapsed : 0;
  return { limit: kind === PREV_REQUESTS ? rules[best]!.rpm! : rules[best]!.tpm!, remaining: bestRemaining, resetMs };
}
