/**
 * Chooses the prefix index backend: Redis when a URL is given (router replicas then share one index), the
 * in-process one otherwise (the embedded default). The caller passes the URL from config; nothing here reads the
 * environment.
 */

import type { PrefixIndex } from '../types.js';
import { LocalPrefixIndex } from './local.js';
import { type IndexLogger, RedisPrefixIndex } from './redis.js';

/**
 * Half a million entries: the whole KV cache of 64 engines holding 500K tokens each, at 64-token blocks. At worst
 * (ENTRY_BYTES, REDIS_ENTRY_BYTES) about 48 MB in process, 224 MB in Redis.
 */
export const DEFAULT_MAX_ENTRIES = 500_000;

export interface PrefixIndexOptions {
  readonly redisUrl?: string | undefined;
  /** Most (block, engine) entries, all engines together. */
  readonly maxEntries?: number;
  /** Approximate memory budget of the backend holding the entries (router heap, or Redis). */
  readonly maxBytes?: number;
  readonly keyPrefix?: string;
  readonly flushIntervalMs?: number;
  readonly logger?: IndexLogger;
}

export function createPrefixIndex(options: PrefixIndexOptions = {}): PrefixIndex {
  const bounds = { maxEntries: options.maxEntries ?? DEFAULT_MAX_ENTRIES, maxBytes: options.maxBytes };
  if (options.redisUrl === undefined || options.redisUrl === '') return new LocalPrefixIndex(bounds);
  return new RedisPrefixIndex({ ...bounds, redis: options.redisUrl, keyPrefix: options.keyPrefix, flushIntervalMs: options.flushIntervalMs, logger: options.logger });
}
