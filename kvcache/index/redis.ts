/**
 * The prefix index in Redis, shared by every router replica (data layout and bounds: redis-scripts.ts).
 *
 * - match() is one EVALSHA whatever the prompt length: all hashes go as one 8-bytes-per-block argument, and the
 *   script walks the chain server-side and answers with per-engine counts. The walk costs Redis about 1.5 us per
 *   block (3 ms for a 128K-token prompt at 64-token blocks, 12 ms at 16: one reason for the 64 default). It rejects on any Redis error, and at
 *   once while the connection is down (rather than after a timeout), so the gateway routes without prefix
 *   information instead of waiting.
 * - Writes are buffered and sent by one script call per flush: after flushIntervalMs, or as soon as
 *   maxBatchBlocks blocks are waiting. One flush is in flight at a time; what arrives meanwhile waits for the next,
 *   up to MAX_PENDING_BATCHES batches, beyond which records are dropped (counted): the index is a hint, and a
 *   Redis that cannot keep up must not grow the router's memory. A failed flush is counted and logged, never
 *   thrown: its batch is lost, as a hint may be. So a replica sees another's writes after at most flushIntervalMs
 *   plus a round trip.
 */

import { Redis } from 'ioredis';
import type { BlockHash, PrefixIndex, PrefixMatches } from '../types.js';
import { entryBound, requireCapacity } from './bounds.js';
import { FLUSH_SCRIPT, MATCH_SCRIPT } from './redis-scripts.js';

/**
 * Redis memory per entry in the worst case, where no two engines share a block: a `b:` hash key of its own, and a
 * member of the engine's and of the global sorted set. `npm run bench:index` measures 415 to 426 B with INFO used_memory
 * (295 to 303 B when 4 engines hold each block); rounded up.
 */
export const REDIS_ENTRY_BYTES = 448;

export const DEFAULT_KEY_PREFIX = 'switchyard:kv:';
export const DEFAULT_FLUSH_INTERVAL_MS = 10;
export const DEFAULT_MAX_BATCH_BLOCKS = 4096;
const MAX_PENDING_BATCHES = 16;
// Entries one script call may remove (about 10 ms of Redis time) before handing back.
const REMOVAL_BUDGET = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 1000;

/** The part of a pino (or Fastify) logger the index uses. */
export interface IndexLogger {
  warn(details: object, message: string): void;
}

export interface RedisPrefixIndexOptions {
  /** A redis:// URL (the index opens, and close() quits, its own connection) or a client to share (left open). */
  readonly redis: string | Redis;
  /** Prefix of every key; distinct deployments sharing a Redis need distinct prefixes. */
  readonly keyPrefix?: string;
  /** Most (block, engine) entries in Redis, all engines together. */
  readonly maxEntries: number;
  /** Approximate Redis memory budget: caps entries at maxBytes / REDIS_ENTRY_BYTES too. */
  readonly maxBytes?: number;
  readonly flushIntervalMs?: number;
  readonly maxBatchBlocks?: number;
  readonly logger?: IndexLogger;
}

interface IndexCommands {
  switchyardKvMatch(prefix: string, hashes: Buffer): Promise<(string | number)[]>;
  switchyardKvFlush(prefix: string, maxEntries: number, budget: number, ...ops: (string | Buffer)[]): Promise<number>;
}

type Op = 's' | 'r' | 'c' | 'k';

const consoleLogger: IndexLogger = { warn: (details, message) => console.warn(message, details) };

/** How old an engine's fill may get before it is read again. */
const FILL_REFRESH_MS = 1000;

export class RedisPrefixIndex implements PrefixIndex {
  readonly keyPrefix: string;
  /** The bound on entries, from maxEntries and maxBytes. */
  readonly maxEntries: number;
  private readonly client: Redis & IndexCommands;
  private readonly ownsClient: boolean;
  private readonly flushIntervalMs: number;
  private readonly maxBatchBlocks: number;
  private readonly logger: IndexLogger;
  // Operations waiting for the next flush, as the script's argument triples.
  private pending: (string | Buffer)[] = [];
  private pendingBlocks = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private closed = false;
  private failedWrites = 0;
  private readonly fills = new Map<string, { value: number; readAt: number }>();
  private dropped = 0;

  constructor(options: RedisPrefixIndexOptions) {
    this.maxEntries = entryBound(options.maxEntries, options.maxBytes, REDIS_ENTRY_BYTES);
    this.keyPrefix = options.keyPrefix ?? DEFAULT_KEY_PREFIX;
    this.flushIntervalMs = options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
    this.maxBatchBlocks = options.maxBatchBlocks ?? DEFAULT_MAX_BATCH_BLOCKS;
    this.logger = options.logger ?? consoleLogger;
    this.ownsClient = typeof options.redis === 'string';
    const client = typeof options.redis === 'string' ? new Redis(options.redis, { commandTimeout: DEFAULT_COMMAND_TIMEOUT_MS }) : options.redis;
    if (this.ownsClient) client.on('error', (err: Error) => this.logger.warn({ err }, 'prefix index: Redis connection error'));
    // Defined once per client; ioredis sends EVALSHA and falls back to EVAL when Redis lacks the script.
    if (!('switchyardKvMatch' in client)) {
      client.defineCommand('switchyardKvMatch', { numberOfKeys: 0, lua: MATCH_SCRIPT, readOnly: true });
      client.defineCommand('switchyardKvFlush', { numberOfKeys: 0, lua: FLUSH_SCRIPT });
    }
    this.client = client as Redis & IndexCommands;
  }

  /** Flushes that failed (their batch lost), and records dropped because Redis could not keep up. */
  get writeErrors(): { failedFlushes: number; droppedRecords: number } {
    return { failedFlushes: this.failedWrites, droppedRecords: this.dropped };
  }

  async match(hashes: readonly BlockHash[]): Promise<PrefixMatches> {
    const status = this.client.status;
    if (status === 'reconnecting' || status === 'close' || status === 'end') throw new Error(`prefix index: Redis is unavailable (${status})`);
    const result = new Map<string, number>();
    if (hashes.length === 0) return result;
    const reply = await this.client.switchyardKvMatch(this.keyPrefix, encodeHashes(hashes));
    for (let i = 0; i < reply.length; i += 2) result.set(String(reply[i]), Number(reply[i + 1]));
    return result;
  }

  recordStored(engineId: string, hashes: readonly BlockHash[]): void {
    if (hashes.length > 0) this.enqueue('s', engineId, encodeHashes(hashes), hashes.length);
  }

  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void {
    if (hashes.length > 0) this.enqueue('r', engineId, encodeHashes(hashes), hashes.length);
  }

  clearEngine(engineId: string): void {
    this.enqueue('c', engineId, '', 1);
  }

  setCapacity(engineId: string, blocks: number): void {
    requireCapacity(blocks);
    this.enqueue('k', engineId, String(blocks), 1);
  }

  fill(engineId: string): number {
    const known = this.fills.get(engineId);
    const now = performance.now();
    if (known === undefined || now - known.readAt > FILL_REFRESH_MS) {
      this.fills.set(engineId, { value: known?.value ?? 0, readAt: now });
      void this.readFill(engineId);
    }
    return known?.value ?? 0;
  }

  private async readFill(engineId: string): Promise<void> {
    try {
      const [count, capacity] = await Promise.all([this.client.zcard(`${this.keyPrefix}e:${engineId}`), this.client.hget(`${this.keyPrefix}cap`, engineId)]);
      const blocks = capacity === null ? 0 : Number(capacity);
      this.fills.set(engineId, { value: blocks > 0 ? Math.min(1, count / blocks) : 0, readAt: performance.now() });
    } catch {
      // A hint: the last value stands until Redis answers again.
    }
  }

  /** Sends everything recorded so far; resolves when Redis has it (or the attempt failed and was counted). */
  flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.inFlight !== undefined) return this.inFlight.then(() => this.flush());
    if (this.pending.length === 0) return Promise.resolve();
    const ops = this.pending;
    this.pending = [];
    this.pendingBlocks = 0;
    const write = this.write(ops).finally(() => {
      this.inFlight = undefined;
      if (this.pending.length > 0 && !this.closed) this.schedule();
    });
    this.inFlight = write;
    return write;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
    if (this.ownsClient) await this.client.quit().catch(() => this.client.disconnect());
  }

  private enqueue(op: Op, engineId: string, payload: string | Buffer, blocks: number): void {
    if (this.closed) return;
    if (this.pendingBlocks + blocks > this.maxBatchBlocks * MAX_PENDING_BATCHES) {
      this.dropped++;
      return;
    }
    this.pending.push(op, engineId, payload);
    this.pendingBlocks += blocks;
    if (this.pendingBlocks >= this.maxBatchBlocks && this.inFlight === undefined) void this.flush();
    else this.schedule();
  }

  private schedule(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.flushIntervalMs);
    // Pending hints must not keep a process alive that has nothing else to do; close() flushes them.
    this.timer.unref();
  }

  private async write(ops: (string | Buffer)[]): Promise<void> {
    try {
      let rest = ops;
      while (rest.length > 0) {
        const done = await this.client.switchyardKvFlush(this.keyPrefix, this.maxEntries, REMOVAL_BUDGET, ...rest);
        rest = rest.slice(done * 3);
      }
    } catch (err) {
      this.failedWrites++;
      this.logger.warn({ err, operations: ops.length / 3 }, 'prefix index: write to Redis failed; batch dropped');
    }
  }
}

function encodeHashes(hashes: readonly BlockHash[]): Buffer {
  const buffer = Buffer.allocUnsafe(hashes.length * 8);
  for (let i = 0; i < hashes.length; i++) buffer.writeBigUInt64BE(hashes[i]!, i * 8);
  return buffer;
}
