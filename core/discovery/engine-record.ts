import type { EngineSpec } from '../engine.js';

/**
 * An engine as a sidecar registers it in Redis, for routers to discover without a config change.
 *
 * Layout under a key prefix (default `switchyard:registry:`):
 * - `<prefix>engine:<id>`: this record as JSON, written with a TTL (PX) and rewritten by every heartbeat, so an
 *   engine whose sidecar stops is gone within one TTL;
 * - `<prefix>engines`: a set of the ids ever registered; readers MGET the records and remove ids whose record
 *   expired. Deregistering (a drain) deletes both at once.
 */
export interface EngineRecord extends EngineSpec {
  /** ms since epoch of the heartbeat that wrote this record. */
  readonly heartbeatAt: number;
}

export const DEFAULT_REGISTRY_PREFIX = 'switchyard:registry:';

export function engineKey(prefix: string, id: string): string {
  return `${prefix}engine:${id}`;
}

export function engineSetKey(prefix: string): string {
  return `${prefix}engines`;
}

/** The record from its JSON, or undefined when it is not one (a foreign or corrupt value is skipped, not fatal). */
export function parseEngineRecord(text: string): EngineRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const r = v as Partial<EngineRecord> | null;
  if (r === null || typeof r !== 'object') return undefined;
  if (typeof r.id !== 'string' || typeof r.url !== 'string' || !Array.isArray(r.models) || typeof r.heartbeatAt !== 'number') return undefined;
  if (r.kind !== 'vllm' && r.kind !== 'sglang' && r.kind !== 'llamacpp') return undefined;
  return {
    id: r.id,
    url: r.url,
    kind: r.kind,
    models: r.models.filter((m): m is string => typeof m === 'string'),
    labels: typeof r.labels === 'object' && r.labels !== null ? (r.labels as Record<string, string>) : {},
    kvCapacityTokens: typeof r.kvCapacityTokens === 'number' ? r.kvCapacityTokens : undefined,
    kvEventsEndpoint: typeof r.kvEventsEndpoint === 'string' ? r.kvEventsEndpoint : undefined,
    sidecarUrl: typeof r.sidecarUrl === 'string' ? r.sidecarUrl : undefined,
    heartbeatAt: r.heartbeatAt,
  };
}
