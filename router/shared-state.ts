import type { FastifyBaseLogger } from 'fastify';
import { Redis } from 'ioredis';
import type { Config } from '../core/config.js';
import type { ControlPlaneStore } from '../core/db/control-plane-store.js';
import { localInvalidationBus, redisInvalidationBus, type InvalidationBus } from '../core/state/invalidation-bus.js';
import type { AdapterStateStore } from '../core/state/adapter-state.js';
import { fallbackRateLimiter } from '../core/state/fallback-rate-limiter.js';
import { memoryAdapterState } from '../core/state/memory-adapter-state.js';
import { redisAdapterState } from '../core/state/redis-adapter-state.js';
import { memoryRateLimiter } from '../core/state/memory-rate-limiter.js';
import type { RateLimiter } from '../core/state/rate-limit.js';
import { redisRateLimiter } from '../core/state/redis-rate-limiter.js';
import { directUsageSink } from '../core/usage/direct-sink.js';
import { redisUsageSink, UsageWriter } from '../core/usage/redis-stream.js';
import type { UsageSink } from '../core/usage/usage-sink.js';
import type { GatewayMetrics } from './metrics.js';

/**
 * What router replicas share, in Redis when `redis.url` is set, else in process (the embedded default): rate-limit
 * counters, cache invalidations, LoRA adapter residency, and the usage events on their way to the database.
 */
export interface SharedState {
  readonly bus: InvalidationBus;
  readonly limiter: RateLimiter;
  /** Where LoRA adapters are resident, their demand, the controller lease. */
  readonly adapters: AdapterStateStore;
  /** Absent without a control-plane database. */
  readonly usage: UsageSink | undefined;
  /** The shared Redis connection, when there is one (engine discovery reads the registry through it). */
  readonly redis: Redis | undefined;
  close(): Promise<void>;
}

export function openSharedState(config: Config, store: ControlPlaneStore | undefined, metrics: GatewayMetrics, log: FastifyBaseLogger): SharedState {
  // The usage modules log for themselves; these only count.
  const sinkHooks = {
    logger: log,
    onError: () => metrics.usageEvents.inc({ outcome: 'failed' }),
    onDrop: (n: number) => metrics.usageEvents.inc({ outcome: 'dropped' }, n),
  };
  const stored = (n: number) => metrics.usageEvents.inc({ outcome: 'stored' }, n);
  const direct = () =>
    store === undefined
      ? undefined
      : directUsageSink({ store, batchSize: config.usage.batchSize, flushIntervalMs: config.usage.flushIntervalMs, onBatch: stored, ...sinkHooks });
  const url = config.redis.url;
  if (url === undefined) {
    const usage = direct();
    const bus = localInvalidationBus();
    const limiter = memoryRateLimiter();
    const adapters = memoryAdapterState();
    return {
      bus,
      limiter,
      adapters,
      usage,
      redis: undefined,
      async close() {
        await usage?.close();
        await bus.close();
        await limiter.close();
        await adapters.close();
      },
    };
  }

  // No offline queue and a short timeout: with Redis down, a limit check fails at once and fail-open/closed
  // applies, rather than every request waiting for a reconnect.
  const redis = new Redis(url, { enableOfflineQueue: false, commandTimeout: config.limits.redisTimeoutMs, maxRetriesPerRequest: 0, enableAutoPipelining: true });
  let redisDown = false;
  redis.on('error', (err: Error) => {
    if (!redisDown) log.error({ err: err.message }, 'Redis unreachable: limits fall back to this replica (or refuse), usage events wait in memory');
    redisDown = true;
  });
  redis.on('ready', () => {
    if (redisDown) log.info('Redis reachable again');
    redisDown = false;
  });
  let lastFallbackLog = 0;
  const bus = redisInvalidationBus(redis, `${config.limits.redisKeyPrefix}invalidate`);
  const limiter = fallbackRateLimiter({
    shared: redisRateLimiter({ redis, keyPrefix: config.limits.redisKeyPrefix }),
    local: memoryRateLimiter(),
    failMode: config.limits.failMode,
    onFallback: (err) => {
      metrics.rateLimitFallbacks.inc();
      // Once per outage, not per request: the metric counts them all.
      const now = Date.now();
      if (now - lastFallbackLog >= 10_000) {
        lastFallbackLog = now;
        log.warn({ err: (err as Error)?.message, failMode: config.limits.failMode }, 'rate-limit check could not reach Redis (down, or slower than limits.redisTimeoutMs)');
      }
    },
  });
  // Rows Redis cannot take (its memory buffer full, or still unsent at shutdown) go straight to the database.
  const fallback = direct();
  const usage = store === undefined ? undefined : redisUsageSink({ redis, streamKey: config.usage.streamKey, fallback, ...sinkHooks });
  const writer =
    store === undefined || !config.usage.writer
      ? undefined
      : new UsageWriter({
          redis,
          store,
          streamKey: config.usage.streamKey,
          group: config.usage.group,
          batchSize: config.usage.batchSize,
          claimIdleMs: config.usage.claimIdleMs,
          onBatch: stored,
          ...sinkHooks,
        });
  writer?.start();
  const adapters = redisAdapterState({ redis, keyPrefix: config.adapters.redisKeyPrefix });
  return {
    bus,
    limiter,
    adapters,
    usage,
    redis,
    async close() {
      await usage?.close();
      await fallback?.close();
      await writer?.stop();
      await bus.close();
      await limiter.close();
      await adapters.close();
      redis.disconnect();
    },
  };
}
