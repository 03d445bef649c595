import { sqlErrorCode } from '../db/sql-client.js';
import type { ControlPlaneStore, UsageRow } from '../db/control-plane-store.js';

/**
 * Where the gateway puts one usage row per finished request. Two implementations: directUsageSink (embedded:
 * batches into the control-plane store) and redisUsageSink (production: a Redis stream that UsageWriter drains
 * into Postgres, so usage survives a Postgres outage).
 */
export interface UsageSink {
  /** Takes the row for later storage. Never throws and never waits: it runs on the request path. */
  record(row: UsageRow): void;
  /** Resolves when everything recorded so far is durable (stored, or in the Redis stream). */
  flush(): Promise<void>;
  /** Flushes (within the sink's close timeout) and stops; rows recorded afterwards are dropped and counted. */
  close(): Promise<void>;
}

/** The part of a pino (or Fastify) logger the usage pipeline uses. */
export interface UsageLogger {
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
}

/** What the pipeline needs of the store: the insert is idempotent on request_id, which makes every retry safe. */
export type UsageStore = Pick<ControlPlaneStore, 'insertUsage'>;

/** What every stage of the usage pipeline reports, so the gateway can log and count it. */
export interface UsageHooks {
  logger?: UsageLogger;
  /** Rows that moved on, per batch (stored, or into the stream: each stage says which). */
  onBatch?: (rows: number) => void;
  /** Each failed attempt; the rows are kept and retried. */
  onError?: (err: unknown) => void;
  /** Rows lost for good (each stage lists when). */
  onDrop?: (rows: number) => void;
}

export const consoleUsageLogger: UsageLogger = {
  warn: (details, message) => console.warn(message, details),
  error: (details, message) => console.error(message, details),
};

/** Why a row cannot be stored as it is, or undefined. Checked on record() so that one bad row never stalls a batch. */
export function usageRowProblem(row: UsageRow): string | undefined {
  if (typeof row !== 'object' || row === null) return 'not an object';
  if (typeof row.requestId !== 'string' || row.requestId === '') return 'requestId must be a non-empty string';
  if (typeof row.model !== 'string') return 'model must be a string';
  if (!Number.isSafeInteger(row.status)) return 'status must be a whole number';
  for (const k of ['promptTokens', 'cachedTokens', 'completionTokens'] as const) {
    const v = row[k];
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0 && v <= 2 ** 31 - 1)) return `${k} must be a whole number >= 0`;
  }
  for (const k of ['ttftMs', 'latencyMs'] as const) {
    const v = row[k];
    if (v !== undefined && v !== null && !Number.isFinite(v)) return `${k} must be a finite number`;
  }
  for (const k of ['tenantId', 'keyId', 'adapter', 'engine'] as const) {
    const v = row[k];
    if (v !== undefined && v !== null && typeof v !== 'string') return `${k} must be a string`;
  }
  if (row.at !== undefined && !(row.at instanceof Date && Number.isFinite(row.at.getTime()))) return 'at must be a valid Date';
  return undefined;
}

/** The row as recorded, stamped with the time of recording: a row stored after an outage keeps its real time. */
export function stamped(row: UsageRow): UsageRow {
  return row.at === undefined ? { ...row, at: new Date() } : row;
}

/** Exponential backoff with jitter: failure 1 waits about baseMs, doubling up to maxMs. */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 30));
  return Math.round(ceiling * (0.5 + Math.random() * 0.5));
}

// Postgres error classes 22 (data exception) and 23 (integrity constraint): the row is the problem, not the server.
const isRowError = (err: unknown): boolean => /^2[23]/.test(sqlErrorCode(err) ?? '');

/**
 * Stores rows with insertUsage. When the database refuses the batch for what a row holds, the rows are tried one by
 * one so a single bad row cannot block the rest forever: a row refused for its tenant or key (deleted since, or not
 * a UUID) is stored without them, as ON DELETE SET NULL would have left it; a row refused anyway goes to `rejected`.
 * Any other failure (connection, server) is thrown, and the caller retries the whole batch: the insert is idempotent.
 */
export async function storeUsageRows(store: UsageStore, rows: readonly UsageRow[], rejected: (row: UsageRow, err: unknown) => void): Promise<void> {
  if (rows.length === 0) return;
  try {
    await store.insertUsage(rows);
    return;
  } catch (err) {
    if (!isRowError(err)) throw err;
  }
  for (const row of rows) {
    try {
      await store.insertUsage([row]);
      continue;
    } catch (err) {
      if (!isRowError(err)) throw err;
      if (row.tenantId == null && row.keyId == null) {
        rejected(row, err);
        continue;
      }
    }
    try {
      await store.insertUsage([{ ...row, tenantId: null, keyId: null }]);
    } catch (err) {
      if (!isRowError(err)) throw err;
      rejected(row, err);
    }
  }
}

/**
 * Counts rows the pipeline loses and says so loudly: an error log for the first loss of each kind (reason), then
 * at most one per kind every `everyMs` with the running total, so an outage cannot flood the log.
 */
export function dropReporter(logger: UsageLogger, source: string, onDrop?: (rows: number) => void, everyMs = 10_000): (rows: number, reason: string, details?: object) => void {
  let total = 0;
  const lastLog = new Map<string, number>();
  return (rows, reason, details = {}) => {
    if (rows <= 0) return;
    total += rows;
    try {
      onDrop?.(rows);
    } catch {
      // a metrics hook must not break the pipeline
    }
    const now = Date.now();
    if (now - (lastLog.get(reason) ?? -Infinity) < everyMs) return;
    lastLog.set(reason, now);
    logger.error({ ...details, rows, reason, droppedTotal: total }, `${source}: USAGE ROWS LOST (${rows}): ${reason}`);
  };
}

/** Calls a metrics hook without letting it throw into the pipeline. */
export function safely<A extends unknown[]>(hook: ((...args: A) => void) | undefined, ...args: A): void {
  try {
    hook?.(...args);
  } catch {
    // hooks are for metrics; a broken one must not lose usage
  }
}
