/**
 * Requests-per-minute and tokens-per-minute limits, checked and reserved in one step so that concurrent requests
 * cannot all pass a check that is charged only after they finish. One interface, two stores: Redis (shared by
 * every router replica, one Lua round trip) and in-process (the embedded default, and the fail-open fallback).
 *
 * Counting is a sliding window over the last minute, estimated from two fixed one-minute windows (the previous
 * window weighted by how much of it still overlaps): O(1) memory per scope, exact while the previous window is
 * empty, and never more than the limit when the load is steady.
 */

/** One scope's limits: tenant-wide, per model, per key, or per key and model. null: no limit of that kind. */
export interface LimitRule {
  /** Stable id of the scope, unique within the tenant, e.g. "tenant", "model:llama", "key:<id>", "key:<id>:model:llama". */
  readonly scope: string;
  readonly rpm: number | null;
  readonly tpm: number | null;
}

export interface ReserveRequest {
  /** Every rule is keyed under the tenant (a Redis hash tag), so one script touches one cluster slot. */
  readonly tenantId: string;
  readonly rules: readonly LimitRule[];
  /** Tokens to reserve: the prompt estimate plus the most the answer may use. */
  readonly tokens: number;
}

/** Where a kind of limit stands after a decision, for OpenAI's x-ratelimit-* headers (the tightest scope). */
export interface LimitStatus {
  readonly limit: number;
  readonly remaining: number;
  /** Milliseconds until the scope is back to its full allowance. */
  readonly resetMs: number;
}

/** A granted reservation: hand it back to settle() with the real usage. Opaque to callers. */
export interface Reservation {
  readonly tenantId: string;
  readonly scopes: readonly string[];
  readonly tokens: number;
  /** Start (ms since epoch, store clock) of the window the tokens were counted in. */
  readonly windowStart: number;
  /** Which store counted it, so the correction goes to the same place. */
  readonly store: 'shared' | 'local';
}

export type ReserveResult =
  | {
      readonly allowed: true;
      readonly reservation: Reservation;
      readonly requests: LimitStatus | undefined;
      readonly tokens: LimitStatus | undefined;
    }
  | {
      readonly allowed: false;
      /** The scope and kind that refused. */
      readonly scope: string;
      readonly kind: 'requests' | 'tokens';
      /** The request alone asks for more tokens than the scope's whole per-minute limit: waiting will not help. */
      readonly tooLarge: boolean;
      readonly retryAfterMs: number;
      readonly requests: LimitStatus | undefined;
      readonly tokens: LimitStatus | undefined;
    };

export interface RateLimiter {
  /** Checks every rule and, only if all pass, counts one request and `tokens` against each. */
  reserve(req: ReserveRequest): Promise<ReserveResult>;
  /** Replaces the reservation's tokens by what the request really used (may be more or less). */
  settle(reservation: Reservation, actualTokens: number): Promise<void>;
  close(): Promise<void>;
}

/** The shared store could not be reached and the configured choice is to refuse (fail-closed). */
export class RateLimitUnavailableError extends Error {
  constructor(cause: unknown) {
    super('the rate-limit store is unavailable', { cause });
    this.name = 'RateLimitUnavailableError';
  }
}

export const WINDOW_MS = 60_000;
