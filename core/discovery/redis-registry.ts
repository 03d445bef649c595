import type { Redis } from 'ioredis';
import { engineKey, engineSetKey, parseEngineRecord, type EngineRecord } from './engine-record.js';

/**
 * Engines registered by sidecars in Redis (layout in engine-record.ts), read every `intervalMs`. An engine whose
 * heartbeat stopped has an expired record and is dropped at the next read; its id leaves the set then too.
 * Read failures keep the last known list: a Redis blip must not empty the fleet.
 */
export interface RegistryDiscovery {
  /** The engines as last read. */
  readonly engines: readonly EngineRecord[];
  /** Reads now (also what the timer does). */
  refresh(): Promise<void>;
  stop(): void;
}

export function discoverFromRegistry(opts: {
  redis: Redis;
  prefix: string;
  intervalMs: number;
  onChange: (engines: readonly EngineRecord[]) => void;
  onError?: (err: unknown) => void;
}): RegistryDiscovery {
  let engines: readonly EngineRecord[] = [];
  let signature = '';
  let reading: Promise<void> | undefined;

  const read = async () => {
    const setKey = engineSetKey(opts.prefix);
    const ids = (await opts.redis.smembers(setKey)).sort();
    const values = ids.length === 0 ? [] : await opts.redis.mget(ids.map((id) => engineKey(opts.prefix, id)));
    const found: EngineRecord[] = [];
    const expired: string[] = [];
    values.forEach((text, i) => {
      const record = text === null ? undefined : parseEngineRecord(text);
      if (record === undefined) expired.push(ids[i]!);
      else found.push(record);
    });
    if (expired.length > 0) await opts.redis.srem(setKey, ...expired);
    // Heartbeats rewrite records every few seconds: only a change of what routing uses is news.
    const next = JSON.stringify(found.map(({ heartbeatAt: _, ...spec }) => spec));
    engines = found;
    if (next !== signature) {
      signature = next;
      opts.onChange(found);
    }
  };

  const refresh = () => {
    reading ??= read()
      .catch((err: unknown) => opts.onError?.(err))
      .finally(() => {
        reading = undefined;
      });
    return reading;
  };

  const timer = setInterval(() => void refresh(), opts.intervalMs);
  timer.unref();
  void refresh();
  return {
    get engines() {
      return engines;
    },
    refresh,
    stop() {
      clearInterval(timer);
    },
  };
}
