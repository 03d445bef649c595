import type { UsageRow } from '../db/control-plane-store.js';
import { RowQueue } from './row-queue.js';
import { consoleUsageLogger, dropReporter, retryDelayMs, safely, stamped, storeUsageRows, usageRowProblem, type UsageLogger, type UsageSink, type UsageStore, type UsageHooks } from './usage-sink.js';

/**
 * The embedded usage sink: rows are batched in memory and written with store.insertUsage, a full batch at once,
 * a partial one after flushIntervalMs. One write is in flight at a time. A failed write keeps its rows and is
 * retried with backoff (the insert is idempotent on request_id, so a retry after an ambiguous failure never
 * doubles a row); memory is bounded by maxBufferedRows, beyond which new rows are dropped, counted and logged.
 */

/** onBatch: rows stored per write. onDrop: buffer full, invalid, refused by the database, left at close, recorded after close. */
export interface DirectSinkOptions extends UsageHooks {
  store: UsageStore;
  /** Rows per insert; default 500. */
  batchSize?: number;
  /** Longest a partial batch waits; default 1000 ms. */
  flushIntervalMs?: number;
  /** Rows held while the database is slow or down; default 100 000 (about 50 MB). */
  maxBufferedRows?: number;
  /** First retry delay; doubles per failure up to retryMaxMs. Defaults 200 ms and 10 s. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** How long close() keeps trying before it gives up on the rows left (logged and counted); default 10 s. */
  closeTimeoutMs?: number;
}

export function directUsageSink(options: DirectSinkOptions): UsageSink {
  const batchSize = Math.max(1, options.batchSize ?? 500);
  const flushIntervalMs = options.flushIntervalMs ?? 1000;
  const retryBaseMs = options.retryBaseMs ?? 200;
  const retryMaxMs = options.retryMaxMs ?? 10_000;
  const closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
  const logger = options.logger ?? consoleUsageLogger;
  const queue = new RowQueue(options.maxBufferedRows ?? 100_000);
  const lost = dropReporter(logger, 'usage sink', options.onDrop);

  let timer: NodeJS.Timeout | undefined;
  let writing = false;
  let failures = 0;
  // Write partial batches too: the interval elapsed, or flush()/close() asked, or a retry is due.
  let drainAll = false;
  let closed = false;
  // close() gave up: nothing more is written.
  let stopped = false;
  let closing: Promise<void> | undefined;

  function arm(ms: number): void {
    if (timer !== undefined || stopped) return;
    timer = setTimeout(() => {
      timer = undefined;
      drainAll = true;
      run();
    }, ms);
    // Queued rows must not keep an otherwise finished process alive; close() is what flushes them.
    timer.unref();
  }

  function run(): void {
    pump().catch((err: unknown) => safely(options.onError, err));
  }

  /** Called after each new row: a full batch goes now, unless a retry is already waiting for its backoff. */
  function kick(): void {
    if (writing || stopped || failures > 0) return;
    if (queue.length >= batchSize) run();
    else arm(flushIntervalMs);
  }

  async function pump(): Promise<void> {
    if (writing || stopped) return;
    clearTimeout(timer);
    timer = undefined;
    writing = true;
    try {
      while (!stopped && queue.length > 0 && (queue.length >= batchSize || drainAll)) {
        const batch = queue.head(batchSize);
        try {
          await storeUsageRows(options.store, batch.map((e) => e.row), (row, err) =>
            lost(1, 'the database refused the row', { requestId: row.requestId, err }),
          );
        } catch (err) {
          failures++;
          safely(options.onError, err);
          logger.warn({ err, attempt: failures, queued: queue.length }, 'usage sink: storing usage failed; the rows are kept and retried');
          drainAll = true;
          arm(retryDelayMs(failures, retryBaseMs, retryMaxMs));
          return;
        }
        failures = 0;
        queue.settle(batch);
        safely(options.onBatch, batch.length);
      }
      if (queue.length === 0) drainAll = false;
      else arm(flushIntervalMs);
    } finally {
      writing = false;
    }
  }

  async function flush(): Promise<void> {
    if (queue.length === 0) return;
    const done = queue.drained();
    drainAll = true;
    // During a backoff the armed retry does the work; hammering a database that is down would not help.
    if (!writing && failures === 0) run();
    await done;
  }

  async function shutdown(): Promise<void> {
    let giveUp: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      flush().then(() => false),
      new Promise<boolean>((resolve) => {
        giveUp = setTimeout(() => resolve(true), closeTimeoutMs);
      }),
    ]);
    clearTimeout(giveUp);
    if (!timedOut) return;
    stopped = true;
    clearTimeout(timer);
    timer = undefined;
    const left = queue.takeAll();
    lost(left.length, `still not stored ${closeTimeoutMs} ms after close()`, { requestIds: left.slice(0, 20).map((r) => r.requestId) });
  }

  return {
    record(row: UsageRow): void {
      try {
        if (closed) return lost(1, 'recorded after close()', { requestId: row?.requestId });
        const problem = usageRowProblem(row);
        if (problem !== undefined) return lost(1, `invalid usage row: ${problem}`, { requestId: row?.requestId });
        if (!queue.push(stamped(row))) {
          return lost(1, `${queue.capacity} rows are already waiting for the database`, { requestId: row.requestId });
        }
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
