/**
 * The shared (Redis) limiter with a way out when Redis is down: fail-open counts in this replica's own limiter
 * (so a tenant may get up to its limit per replica for the outage), fail-closed refuses with
 * RateLimitUnavailableError. There is no circuit breaker: every call tries the shared store first, which costs
 * little because the caller's client fails fast while disconnected (no offline queue, short command timeout), and
 * means limiting is shared again as soon as Redis answers.
 */

import { RateLimitUnavailableError, type RateLimiter, type Reservation, type ReserveRequest, type ReserveResult } from './rate-limit.js';

export function fallbackRateLimiter(opts: {
  shared: RateLimiter;
  local: RateLimiter;
  failMode: 'open' | 'closed';
  /** Called for each reserve() the shared store could not answer, with its error (to log and count), in both modes. */
  onFallback?: (err: unknown) => void;
}): RateLimiter {
  const { shared, local, failMode, onFallback } = opts;
  return {
    async reserve(req: ReserveRequest): Promise<ReserveResult> {
      try {
        return await shared.reserve(req);
      } catch (err) {
        onFallback?.(err);
        if (failMode === 'closed') throw new RateLimitUnavailableError(err);
        return local.reserve(req);
      }
    },

    // The correction goes where the tokens were counted. A shared settle that fails rejects (the caller logs it):
    // the reservation then stays counted as reserved, and expires with its window.
    settle(reservation: Reservation, actualTokens: number): Promise<void> {
      return (reservation.store === 'local' ? local : shared).settle(reservation, actualTokens);
    },

    async close() {
      await Promise.all([shared.close(), local.close()]);
    },
  };
}
