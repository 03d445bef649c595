import { LRUCache } from 'lru-cache';
import { apiKeyDigest, type ControlPlaneStore } from '../core/db/control-plane-store.js';
import type { Principal, PrincipalResolver } from './auth.js';

/**
 * API keys from the control-plane database: SHA-256 of the presented key -> findKeyByDigest, with an LRU in front.
 * Hits and misses are both cached for `ttlMs`, so an unknown key hammered by a client costs one query per TTL.
 * Revoked or expired keys resolve to undefined (401).
 *
 * Revocation reaches every replica through the invalidation bus (`evictKey`, Redis pub/sub across replicas);
 * `ttlMs` bounds staleness should a message be lost.
 */
export interface TenantKeyResolver extends PrincipalResolver {
  /** Forgets every cached entry for this key id (after a revocation). */
  evictKey(keyId: string): void;
  /** Forgets every cached entry of this tenant (its weight or priority changed). */
  evictTenant(tenantId: string): void;
  clear(): void;
  /** Forgets the cached lookup of this clear key (after it is created, so an earlier miss does not linger). */
  evictClearKey(clearKey: string): void;
  readonly size: number;
}

interface Entry {
  principal: Principal | null;
}

export function tenantKeyResolver(store: ControlPlaneStore, opts: { ttlMs: number; maxEntries: number }): TenantKeyResolver {
  const cache = new LRUCache<string, Entry>({ max: opts.maxEntries, ttl: opts.ttlMs, ttlAutopurge: false });
  return {
    async resolve(apiKey) {
      const digest = apiKeyDigest(apiKey);
      const hit = cache.get(digest);
      if (hit !== undefined) return hit.principal ?? undefined;
      const found = await store.findKeyByDigest(digest);
      const principal: Principal | null =
        found === null || found.revoked || found.expired
          ? null
          : {
              id: found.tenantName,
              keyId: found.keyId,
              tenant: { id: found.tenantId, name: found.tenantName, weight: found.weight, priority: found.priority },
            };
      cache.set(digest, { principal });
      return principal ?? undefined;
    },
    evictKey(keyId) {
      for (const [digest, entry] of cache.entries()) if (entry.principal?.keyId === keyId) cache.delete(digest);
    },
    evictTenant(tenantId) {
      for (const [digest, entry] of cache.entries()) if (entry.principal?.tenant?.id === tenantId) cache.delete(digest);
    },
    clear() {
      cache.clear();
    },
    evictClearKey(clearKey) {
      cache.delete(apiKeyDigest(clearKey));
    },
    get size() {
      return cache.size;
    },
  };
}
