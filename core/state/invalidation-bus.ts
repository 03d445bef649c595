import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';

/**
 * Tells every router replica that cached control-plane data changed: a key was revoked, a tenant's quotas,
 * weights or model grants moved. Caches still expire by TTL, so a lost message costs staleness, not safety.
 */
export type Invalidation = { readonly kind: 'key'; readonly keyId: string } | { readonly kind: 'tenant'; readonly tenantId: string } | { readonly kind: 'all' };

export interface InvalidationBus {
  publish(message: Invalidation): Promise<void>;
  /** The handler also runs for this replica's own messages. */
  subscribe(handler: (message: Invalidation) => void): void;
  close(): Promise<void>;
}

/** One process: the embedded default. */
export function localInvalidationBus(): InvalidationBus {
  const emitter = new EventEmitter();
  return {
    async publish(message) {
      emitter.emit('message', message);
    },
    subscribe(handler) {
      emitter.on('message', handler);
    },
    async close() {
      emitter.removeAllListeners();
    },
  };
}

/**
 * Redis pub/sub: `redis` publishes; a duplicate connection subscribes (a subscribed connection can do nothing else).
 * Messages published while the subscriber was disconnected are gone, so whenever it (re)connects the handlers
 * hear `{ kind: 'all' }` and drop their caches.
 */
export function redisInvalidationBus(redis: Redis, channel: string): InvalidationBus {
  const subscriber = redis.duplicate({ enableOfflineQueue: true, commandTimeout: undefined });
  const handlers: ((message: Invalidation) => void)[] = [];
  const dispatch = (message: Invalidation) => {
    for (const h of handlers) h(message);
  };
  // Also on the first connection: caches filled before it may have missed messages.
  subscriber.on('ready', () => dispatch({ kind: 'all' }));
  subscriber.on('error', () => {
    // Reconnection is ioredis's job; until then the TTLs bound how stale a cache gets.
  });
  subscriber.on('message', (ch: string, text: string) => {
    if (ch !== channel) return;
    const message = parseInvalidation(text);
    if (message !== undefined) dispatch(message);
  });
  // Not awaited: with Redis down at start-up the gateway still starts; ioredis subscribes once it connects.
  subscriber.subscribe(channel).catch(() => {});
  return {
    async publish(message) {
      // This replica acts before the round trip, so its caches are clean when the admin call returns; it hears
      // the message again through its subscription, which is harmless.
      dispatch(message);
      await redis.publish(channel, JSON.stringify(message));
    },
    subscribe(handler) {
      handlers.push(handler);
    },
    async close() {
      handlers.length = 0;
      subscriber.disconnect();
    },
  };
}

function parseInvalidation(text: string): Invalidation | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const m = value as { kind?: unknown; keyId?: unknown; tenantId?: unknown };
  if (m.kind === 'key' && typeof m.keyId === 'string') return { kind: 'key', keyId: m.keyId };
  if (m.kind === 'tenant' && typeof m.tenantId === 'string') return { kind: 'tenant', tenantId: m.tenantId };
  if (m.kind === 'all') return { kind: 'all' };
  return undefined;
}
