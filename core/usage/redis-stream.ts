import type { Redis } from 'ioredis';
import type { UsageRow } from '../db/control-plane-store.js';
import { RowQueue, type QueuedRow } from './row-queue.js';
import { USAGE_FIELD, encodeUsage } from './stream-codec.js';
import { consoleUsageLogger, dropReporter, retryDelayMs, safely, stamped, usageRowProblem, type UsageLogger, type UsageSink, type UsageHooks } from './usage-sink.js';

export { UsageWriter, type UsageWriterOptions } from './stream-writer.js';

/**
 * The production usage sink: each row is XADDed to a Redis stream, which UsageWriter drains into Postgres; so a
 * Postgres outage costs nothing but delay. Rows recorded in the same tick go out as one pipeline (one round trip),
 * and one pipeline is in flight at a time, so batches grow with load.
 *
 * When Redis refuses or is unreachable, rows stay in memory (bounded) and are retried with backoff; rows beyond
 * the bound, and those still unsent when close() gives up, go to `fallback` (typically a direct sink on the same
 * database) or, without one, are counted as lost and logged as errors. Never silently.
 *
 * A send that times out is retried, and the first attempt may still land when Redis comes back: the stream may
 * then hold a row twice, which is harmless, because the writer's insert is idempotent on request_id.
 */

/** onBatch: rows into the stream per pipeline. onDrop: no room and no fallback, invalid, recorded after close. */
export interface RedisUsageSinkOptions extends UsageHooks {
  /** A client shared with the rest of the gateway; close() leaves it open. */
  redis: Redis;
  streamKey: string;
  /** Takes the rows Redis could not: overflow and what is left at close(). flush() waits for it; close() does not close it. */
  fallback?: UsageSink;
  /** Rows held while Redis is unreachable; default 100 000. */
  maxBufferedRows?: number;
  /** XADDs per pipeline; default 1000. */
  maxBatchRows?: number;
  /** Longest wait for one pipeline before it counts as failed; default 5 s. */
  sendTimeoutMs?: number;
  /** Backoff between retries: defaults 100 ms doubling to 5 s. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** How long close() keeps trying before handing the rest to the fallback (or losing it); default 5 s. */
  closeTimeoutMs?: number;
}

// Statuses in which ioredis would only queue a command until some later reconnection: fail fast and retry instead.
const UNREACHABLE = new Set(['reconnecting', 'close', 'end']);

export function redisUsageSink(options: RedisUsageSinkOptions): UsageSink {
  const { redis, streamKey, fallback } = options;
  const maxBatchRows = Math.max(1, options.maxBatchRows ?? 1000);
  const sendTimeoutMs = options.sendTimeoutMs ?? 5000;
  const retryBaseMs = options.retryBaseMs ?? 100;
  const retryMaxMs = options.retryMaxMs ?? 5000;
  const closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  const logger = options.logger ?? consoleUsageLogger;
  const queue = new RowQueue(options.maxBufferedRows ?? 100_000);
  const lost = dropReporter(logger, 'usage stream sink', options.onDrop);

  let scheduled = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let sending = false;
  let failures = 0;
  let closed = false;
  let stopped = false;
  let usedFallback = false;
  let diverted = 0;
  let lastDivertLog = -Infinity;
  let closing: Promise<void> | undefined;

  /** Rows Redis could not take: to the fallback when there is one, else lost (counted, logged). */
  function divert(rows: readonly UsageRow[], reason: string): void {
    if (rows.length === 0) return;
    if (fallback === undefined) return lost(rows.length, reason, { requestIds: rows.slice(0, 20).map((r) => r.requestId) });
    usedFallback = true;
    diverted += rows.length;
    for (const row of rows) fallback.record(row);
    // Loud but bounded: once per 10 s at most, with the running total.
    if (Date.now() - lastDivertLog >= 10_000) {
      lastDivertLog = Date.now();
      logger.warn({ rows: rows.length, reason, divertedTotal: diverted }, 'usage stream sink: rows handed to the fallback sink');
    }
  }

  function run(): void {
    pump().catch((err: unknown) => safely(options.onError, err));
  }

  /** After each new row: one send per tick collects every row recorded in it; a pending retry waits its turn. */
  function kick(): void {
    if (scheduled || sending || stopped || failures > 0) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      run();
    });
  }

  async function pump(): Promise<void> {
    if (sending || stopped) return;
    sending = true;
    try {
      while (!stopped && queue.length > 0) {
        const batch = queue.head(maxBatchRows);
        let outcome: { sent: QueuedRow[]; err?: unknown };
        try {
          outcome = await send(batch);
        } catch (err) {
          outcome = { sent: [], err };
        }
        queue.settle(outcome.sent);
        if (outcome.sent.length > 0) safely(options.onBatch, outcome.sent.length);
        if (outcome.err !== undefined) {
          failures++;
          safely(options.onError, outcome.err);
          if (failures === 1 || failures % 10 === 0) {
            logger.warn({ err: outcome.err, attempt: failures, queued: queue.length }, 'usage stream sink: XADD failed; the rows are kept and retried');
          }
          clearTimeout(retryTimer);
          retryTimer = setTimeout(() => {
            retryTimer = undefined;
            run();
          }, retryDelayMs(failures, retryBaseMs, retryMaxMs));
          retryTimer.unref();
          return;
        }
        if (failures > 0) logger.warn({ after: failures }, 'usage stream sink: Redis takes usage rows again');
        failures = 0;
      }
    } finally {
      sending = false;
    }
  }

  /** One pipeline of XADDs; returns the rows that made it (the others stay queued) and the first error. */
  async function send(batch: readonly QueuedRow[]): Promise<{ sent: QueuedRow[]; err?: unknown }> {
    if (UNREACHABLE.has(redis.status)) throw new Error(`Redis is unreachable (${redis.status})`);
    const pipeline = redis.pipeline();
    for (const e of batch) pipeline.xadd(streamKey, '*', USAGE_FIELD, encodeUsage(e.row));
    const results = await withTimeout(pipeline.exec(), sendTimeoutMs, 'XADD pipeline');
    if (results === null) throw new Error('XADD pipeline was discarded');
    const sent: QueuedRow[] = [];
    let err: unknown;
    results.forEach(([error], i) => {
      if (error) err ??= error;
      else sent.push(batch[i]!);
    });
    return { sent, err };
  }

  async function flush(): Promise<void> {
    await queue.drained();
    if (usedFallback) await fallback?.flush();
  }

  async function shutdown(): Promise<void> {
    // With Redis down already, waiting for it would only delay the shutdown: the fallback stores them now.
    const unreachable = UNREACHABLE.has(redis.status);
    let giveUp: NodeJS.Timeout | undefined;
    const timedOut =
      unreachable ||
      (await Promise.race([
        queue.drained().then(() => false),
        new Promise<boolean>((resolve) => {
          giveUp = setTimeout(() => resolve(true), closeTimeoutMs);
        }),
      ]));
    clearTimeout(giveUp);
    if (timedOut) {
      stopped = true;
      clearTimeout(retryTimer);
      divert(queue.takeAll(), unreachable ? 'Redis is unreachable at close()' : `Redis did not take them within ${closeTimeoutMs} ms of close()`);
    }
    if (usedFallback) await fallback?.flush();
  }

  return {
    record(row: UsageRow): void {
      try {
        if (closed) return divert([stamped(row)], 'recorded after close()');
        const problem = usageRowProblem(row);
        if (problem !== undefined) return lost(1, `invalid usage row: ${problem}`, { requestId: row?.requestId });
        const r = stamped(row);
        if (!queue.push(r)) return divert([r], `${queue.capacity} rows are already waiting for Redis`);
        kick();
      } catch (err) {
        safely(options.onError, err);
      }
    },
    flush,
    close(): Promise<void> {
      closed = true;
      closing ??= shutdown();
      return closing;
    },
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  // A late rejection of the abandoned promise must not surface as unhandled.
  promise.catch(() => {});
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
