/**
 * The sidecar's entry in the Redis engine registry (layout: core/discovery/engine-record.ts): the record written
 * with a TTL and rewritten every heartbeat, its id added to the set; both removed at once on deregister. A sidecar
 * that dies without deregistering is gone from routers within one TTL.
 *
 * A heartbeat whose write fails is reported and retried at the next one; routers keep the record until it expires,
 * so a Redis blip shorter than the TTL changes nothing.
 */

import type { Redis } from 'ioredis';
import type { EngineSpec } from '../core/engine.js';
import { DEFAULT_REGISTRY_PREFIX, engineKey, engineSetKey, type EngineRecord } from '../core/discovery/engine-record.js';

export interface RegistrationOptions {
  readonly redis: Redis;
  /** Default DEFAULT_REGISTRY_PREFIX. */
  readonly prefix?: string;
  /** Record TTL; default 10 000. */
  readonly ttlMs?: number;
  /** Default ttlMs / 3. */
  readonly heartbeatMs?: number;
  /**
   * What to write at each heartbeat; undefined skips it (the engine has not been seen healthy yet, or its models
   * are unknown). Called every heartbeat, so a change (new models after a restart) goes out with the next one.
   */
  readonly record: () => EngineSpec & { sidecarUrl?: string | undefined } | undefined;
  /** A failed write. Default: one line on stderr. */
  readonly onError?: (err: Error) => void;
  /** The first successful write. */
  readonly onRegistered?: (record: EngineRecord) => void;
}

export interface Registration {
  /** Writes the record now (what the timer does); resolves true when it was written. */
  heartbeat(): Promise<boolean>;
  /** Whether a record has been written and not removed. */
  readonly registered: boolean;
  /** Stops heartbeats (an in-flight one finishes first) and deletes the record and the id. Idempotent. */
  deregister(): Promise<void>;
  /** Stops heartbeats and leaves the record to expire. */
  stop(): void;
}

export const REGISTRATION_DEFAULTS = { ttlMs: 10_000 } as const;

export function startRegistration(opts: RegistrationOptions): Registration {
  const prefix = opts.prefix ?? DEFAULT_REGISTRY_PREFIX;
  const ttlMs = opts.ttlMs ?? REGISTRATION_DEFAULTS.ttlMs;
  if (!(Number.isInteger(ttlMs) && ttlMs >= 100)) throw new RangeError(`registration: ttlMs must be an integer >= 100, got ${ttlMs}`);
  const heartbeatMs = opts.heartbeatMs ?? Math.floor(ttlMs / 3);
  if (!(heartbeatMs > 0 && heartbeatMs < ttlMs)) throw new RangeError(`registration: heartbeatMs must be in (0, ttlMs), got ${heartbeatMs}`);
  const report = opts.onError ?? ((err: Error) => console.error(`registration: ${err.message}`));
  let stopped = false;
  let registered = false;
  let writtenId: string | undefined;
  let inFlight: Promise<boolean> | undefined;
  let failing = false;

  const write = async (): Promise<boolean> => {
    const spec = opts.record();
    if (spec === undefined || stopped) return false;
    const record: EngineRecord = { ...spec, heartbeatAt: Date.now() };
    try {
      if (writtenId !== undefined && writtenId !== record.id) await remove(writtenId);
      const results = await opts.redis
        .multi()
        .set(engineKey(prefix, record.id), JSON.stringify(record), 'PX', ttlMs)
        .sadd(engineSetKey(prefix), record.id)
        .exec();
      const failed = results?.find(([err]) => err !== null)?.[0];
      if (results === null || failed) throw failed ?? new Error('transaction aborted');
    } catch (err) {
      if (!failing) report(new Error(`heartbeat for engine "${record.id}" failed: ${(err as Error).message}`));
      failing = true;
      return false;
    }
    if (failing) report(new Error(`heartbeat for engine "${record.id}" written again`));
    failing = false;
    writtenId = record.id;
    if (!registered) {
      registered = true;
      opts.onRegistered?.(record);
    }
    return true;
  };

  const remove = async (id: string): Promise<void> => {
    await opts.redis.multi().del(engineKey(prefix, id)).srem(engineSetKey(prefix), id).exec();
  };

  const heartbeat = (): Promise<boolean> => {
    inFlight ??= write().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  const timer = setInterval(() => void heartbeat(), heartbeatMs);
  let deregistering: Promise<void> | undefined;

  return {
    heartbeat,
    get registered() {
      return registered;
    },
    deregister() {
      deregistering ??= (async () => {
        stopped = true;
        clearInterval(timer);
        await inFlight;
        if (writtenId === undefined) return;
        await remove(writtenId);
        registered = false;
        writtenId = undefined;
      })();
      return deregistering;
    },
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
