import { LRUCache } from 'lru-cache';
import type { ControlPlaneStore, Quota } from '../core/db/control-plane-store.js';
import type { LimitRule } from '../core/state/rate-limit.js';

/**
 * Per tenant, what the gateway enforces on each request: the registered models it may not use, and its quotas
 * turned into rate-limit rules. Read from the database once per tenant and TTL, and dropped early when the
 * invalidation bus says the tenant changed.
 */
export interface TenantRules {
  /** Registered models this tenant may not use. */
  readonly deniedModels: ReadonlySet<string>;
  /** The rules that apply to a request for `model` made with key `keyId`; the same array for the same arguments. */
  rulesFor(model: string, keyId: string | undefined): readonly LimitRule[];
}

export interface TenantPolicyCache {
  get(tenantId: string): Promise<TenantRules>;
  evictTenant(tenantId: string): void;
  clear(): void;
}

export function tenantPolicyCache(store: ControlPlaneStore, opts: { ttlMs: number; maxEntries: number }): TenantPolicyCache {
  const cache = new LRUCache<string, TenantRules>({ max: opts.maxEntries, ttl: opts.ttlMs });
  // Concurrent misses for one tenant share one query.
  const loading = new Map<string, Promise<TenantRules>>();
  return {
    async get(tenantId) {
      const hit = cache.get(tenantId);
      if (hit !== undefined) return hit;
      let pending = loading.get(tenantId);
      if (pending === undefined) {
        pending = store.tenantPolicy(tenantId).then(
          (p) => {
            loading.delete(tenantId);
            const rules = compileRules(p.quotas, p.deniedModels);
            cache.set(tenantId, rules);
            return rules;
          },
          (err: unknown) => {
            loading.delete(tenantId);
            throw err;
          },
        );
        loading.set(tenantId, pending);
      }
      return pending;
    },
    evictTenant(tenantId) {
      cache.delete(tenantId);
    },
    clear() {
      cache.clear();
    },
  };
}

const noRules: readonly LimitRule[] = [];

export function compileRules(quotas: readonly Quota[], deniedModels: readonly string[]): TenantRules {
  const all = quotas.map((q) => ({ quota: q, rule: { scope: scopeId(q), rpm: q.rpm, tpm: q.tpm } satisfies LimitRule }));
  // Requests come for a handful of (model, key) pairs; each pair's rule list is built once.
  const memo = new Map<string, readonly LimitRule[]>();
  return {
    deniedModels: new Set(deniedModels),
    rulesFor(model, keyId) {
      if (all.length === 0) return noRules;
      const memoKey = keyId === undefined ? model : `${keyId}\u0000${model}`;
      let rules = memo.get(memoKey);
      if (rules === undefined) {
        rules = all.filter(({ quota: q }) => (q.model === null || q.model === model) && (q.keyId === null || q.keyId === keyId)).map((x) => x.rule);
        if (memo.size < 1_000) memo.set(memoKey, rules);
      }
      return rules;
    },
  };
}

function scopeId(q: Quota): string {
  if (q.keyId !== null) return q.model === null ? `key:${q.keyId}` : `key:${q.keyId}:model:${q.model}`;
  return q.model === null ? 'tenant' : `model:${q.model}`;
}
