import { randomUUID } from 'node:crypto';
import type { UsageRow } from '../../../core/db/control-plane-store.js';
import type { SqlClient } from '../../../core/db/sql-client.js';
import type { UsageLogger, UsageStore } from '../../../core/usage/usage-sink.js';

/** Usage rows with fresh request ids. */
export function usageRows(n: number, over: Partial<UsageRow> = {}): UsageRow[] {
  const run = randomUUID().slice(0, 8);
  return Array.from({ length: n }, (_, i) => ({
    requestId: `req-${run}-${i}`,
    model: 'test-model',
    engine: `engine-${i % 3}`,
    promptTokens: 100 + i,
    cachedTokens: i % 50,
    completionTokens: 7,
    status: 200,
    ttftMs: 12.5,
    latencyMs: 80,
    ...over,
  }));
}

/** How many usage rows the database holds, and how many distinct request ids among them. */
export async function usageCounts(db: SqlClient): Promise<{ rows: number; distinct: number }> {
  const { rows } = await db.query<{ n: unknown; d: unknown }>('SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM usage');
  return { rows: Number(rows[0]!.n), distinct: Number(rows[0]!.d) };
}

export interface MemoryLogger extends UsageLogger {
  warns: string[];
  errors: string[];
}

export function memoryLogger(): MemoryLogger {
  const warns: string[] = [];
  const errors: string[] = [];
  return { warns, errors, warn: (_d, m) => void warns.push(m), error: (_d, m) => void errors.push(m) };
}

/** A store whose inserts fail while `down` says so, counting calls. */
export function flakyStore(store: UsageStore, down: () => boolean): UsageStore & { calls: number; failures: number } {
  const s = {
    calls: 0,
    failures: 0,
    insertUsage: async (rows: readonly UsageRow[]): Promise<number> => {
      s.calls++;
      if (down()) {
        s.failures++;
        throw new Error('database is down (test)');
      }
      return store.insertUsage(rows);
    },
  };
  return s;
}

/** Waits for the promise, but fails the test rather than hanging when it does not settle in time. */
export async function within<T>(promise: Promise<T>, ms: number, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
