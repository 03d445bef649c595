import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { UsageRow } from '../db/control-plane-store.js';
import { USAGE_FIELD, claimReply, decodeUsage, fieldValue, readReplyEntries, type StreamEntry } from './stream-codec.js';
import { consoleUsageLogger, dropReporter, retryDelayMs, safely, storeUsageRows, type UsageLogger, type UsageStore, type UsageHooks } from './usage-sink.js';

/**
 * Drains the usage stream into Postgres as one consumer of a consumer group, so several writers (one per gateway
 * replica, say) share the work and take over from each other:
 *
 * - XREADGROUP ... '>' reads new entries; the batch is inserted (idempotent on request_id), and only after the
 *   insert committed are its ids XACKed and XDELed. A crash in between leaves them pending, never lost.
 * - At start, and after a failure that left no batch in hand, the writer first re-reads its own pending entries
 *   (id '0'): a writer restarted under the same consumer name finishes what it had read.
 * - Entries pending longer than claimIdleMs with another consumer (dead, or stuck) are taken over with XAUTOCLAIM.
 *   If that consumer was only slow, both insert: the second insert adds nothing.
 * - A failed insert (Postgres down) keeps the batch in hand and retries it with backoff; the rest stays in the
 *   stream. Keeping the batch rather than re-reading it lets its idle time grow, so a healthy writer can claim it
 *   from one whose database connection alone is broken.
 *
 * The blocking read runs on its own connection (redis.duplicate()), which stop() disconnects to end it at once.
 */

/** onBatch: rows stored (new or already there) per committed batch. onDrop: unreadable entries, rows the database refuses whatever their tenant. */
export interface UsageWriterOptions extends UsageHooks {
  /** For XACK, XDEL, XAUTOCLAIM and XGROUP; duplicated for the blocking read. Left open by stop(). */
  redis: Redis;
  streamKey: string;
  store: UsageStore;
  /** Consumer group; default 'usage-writers'. */
  group?: string;
  /** This writer's name in the group; default host name and pid, stable across restarts of a pod's process. */
  consumer?: string;
  /** Entries per read and insert; default 500. */
  batchSize?: number;
  /** How long one XREADGROUP blocks waiting for entries; default 2000 ms. */
  blockMs?: number;
  /** Idle time after which another consumer's pending entries are claimed; default 30 s. */
  claimIdleMs?: number;
  /** Backoff after a failure: defaults 200 ms doubling to 5 s. */
  retryBaseMs?: number;
  retryMaxMs?: number;
}

/** A batch read from the stream: every id to acknowledge, and the rows among them to store. */
interface Batch {
  ids: string[];
  rows: UsageRow[];
}

interface Run {
  stopping: boolean;
  wake?: () => void;
}

export class UsageWriter {
  readonly consumer: string;
  private readonly group: string;
  private readonly batchSize: number;
  private readonly blockMs: number;
  private readonly claimIdleMs: number;
  private readonly claimEveryMs: number;
  private readonly logger: UsageLogger;
  private readonly lost: (rows: number, reason: string, details?: object) => void;
  private reader: Redis | undefined;
  private loop: Promise<void> | undefined;
  private current: Run | undefined;

  constructor(private readonly options: UsageWriterOptions) {
    this.group = options.group ?? 'usage-writers';
    this.consumer = options.consumer ?? `${hostname()}-${process.pid}`;
    this.batchSize = Math.max(1, options.batchSize ?? 500);
    this.blockMs = options.blockMs ?? 2000;
    this.claimIdleMs = options.claimIdleMs ?? 30_000;
    // Often enough that an orphaned entry waits little more than claimIdleMs; XAUTOCLAIM with nothing idle is cheap.
    this.claimEveryMs = Math.min(10_000, Math.max(50, Math.floor(this.claimIdleMs / 2)));
    this.logger = options.logger ?? consoleUsageLogger;
    this.lost = dropReporter(this.logger, 'usage writer', options.onDrop);
  }

  /** Starts the loop in the background; failures are reported through onError and the logger, never thrown. */
  start(): void {
    if (this.loop !== undefined) return;
    // No command timeout on the blocking connection (a BLOCK outlasts it), but a client-side bound per read, so a
    // read on a connection that died silently still ends.
    const reader = this.options.redis.duplicate({
      commandTimeout: undefined,
      blockingTimeout: this.blockMs + 5000,
      blockingTimeoutGrace: 5000,
    });
    reader.on('error', () => {}); // its failures surface as failed reads, reported by the loop
    const run: Run = { stopping: false };
    this.reader = reader;
    this.current = run;
    this.loop = this.run(reader, run);
  }

  /**
   * Ends the loop: a blocking read ends at once, a batch being stored is finished (up to timeoutMs; past that its
   * entries stay pending, for this consumer's next start or another writer's XAUTOCLAIM).
   */
  async stop(timeoutMs = 10_000): Promise<void> {
    const loop = this.loop;
    const run = this.current;
    const reader = this.reader;
    if (loop === undefined || run === undefined || reader === undefined) return;
    this.loop = this.current = this.reader = undefined;
    run.stopping = true;
    run.wake?.();
    reader.disconnect();
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      loop.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!finished) this.logger.warn({ consumer: this.consumer, timeoutMs }, 'usage writer: stopped with a batch still being stored; its entries stay pending');
  }

  private async run(reader: Redis, run: Run): Promise<void> {
    let failures = 0;
    let groupReady = false;
    let ownPending = true;
    let claimCursor = '0-0';
    let nextClaimAt = 0;
    let held: Batch | undefined;
    // A writer started with the gateway would otherwise fail (and warn) once before the first connection is up.
    while (!run.stopping && connecting.has(this.options.redis.status)) await pause(run, 50);
    while (!run.stopping) {
      try {
        if (held === undefined) {
          if (!groupReady) {
            await this.createGroup();
            groupReady = true;
          }
          if (Date.now() >= nextClaimAt) {
            const page = claimReply(await this.options.redis.call('XAUTOCLAIM', [
              this.options.streamKey, this.group, this.consumer, this.claimIdleMs, claimCursor, 'COUNT', this.batchSize,
            ]));
            claimCursor = page.next;
            if (claimCursor === '0-0') nextClaimAt = Date.now() + this.claimEveryMs;
            held = this.decode(page.entries);
          } else {
            const entries = await this.read(reader, ownPending ? '0' : '>');
            if (ownPending && entries.length === 0) ownPending = false;
            held = this.decode(entries);
          }
        }
        if (held.ids.length > 0) await this.commit(held);
        held = undefined;
        if (failures > 0) this.logger.warn({ consumer: this.consumer, after: failures }, 'usage writer: storing usage again');
        failures = 0;
      } catch (err) {
        if (run.stopping) break;
        failures++;
        // The group may be gone (stream deleted): recreate it. Without a batch in hand, own pending entries come first.
        groupReady = false;
        if (held === undefined) ownPending = true;
        safely(this.options.onError, err);
        if (failures === 1 || failures % 10 === 0) {
          this.logger.warn({ err, consumer: this.consumer, attempt: failures, heldRows: held?.rows.length ?? 0 }, 'usage writer: failed; backing off, entries stay in the stream');
        }
        await pause(run, retryDelayMs(failures, this.options.retryBaseMs ?? 200, this.options.retryMaxMs ?? 5000));
      }
    }
  }

  private async createGroup(): Promise<void> {
    try {
      // From '0', not '$': rows XADDed before any writer ever started must be read too.
      await this.options.redis.xgroup('CREATE', this.options.streamKey, this.group, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error)?.message).startsWith('BUSYGROUP')) throw err;
    }
  }

  private async read(reader: Redis, id: '0' | '>'): Promise<StreamEntry[]> {
    const block = id === '>' ? ['BLOCK', this.blockMs] : [];
    const reply = await reader.call('XREADGROUP', [
      'GROUP', this.group, this.consumer, 'COUNT', this.batchSize, ...block, 'STREAMS', this.options.streamKey, id,
    ]);
    return readReplyEntries(reply);
  }

  /** Decodes entries once (so a retried batch does not count its unreadable entries twice); one row per request id. */
  private decode(entries: readonly StreamEntry[]): Batch {
    const rows = new Map<string, UsageRow>();
    for (const e of entries) {
      if (e.fields === null) continue; // deleted while pending: stored by someone else, only the ack is left
      const row = decodeUsage(fieldValue(e.fields, USAGE_FIELD));
      if (typeof row === 'string') this.lost(1, `unreadable stream entry: ${row}`, { id: e.id });
      else rows.set(row.requestId, row);
    }
    return { ids: entries.map((e) => e.id), rows: [...rows.values()] };
  }

  /** Stores the rows, then (only then) acknowledges and deletes the entries. */
  private async commit(batch: Batch): Promise<void> {
    await storeUsageRows(this.options.store, batch.rows, (row, err) =>
      this.lost(1, 'the database refused the row', { requestId: row.requestId, err }),
    );
    const { streamKey } = this.options;
    const results = await this.options.redis.pipeline().xack(streamKey, this.group, ...batch.ids).xdel(streamKey, ...batch.ids).exec();
    const failed = results?.find(([err]) => err);
    if (failed) throw failed[0];
    safely(this.options.onBatch, batch.rows.length);
  }
}

/** Sleeps, unless stop() wakes the run first. */
const connecting = new Set(['connecting', 'connect', 'reconnecting']);

function pause(run: Run, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      run.wake = undefined;
      resolve();
    }
    run.wake = done;
  });
}

