import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPrefixIndex } from '../../../kvcache/index/create.js';
import { ENTRY_BYTES, LocalPrefixIndex } from '../../../kvcache/index/local.js';
import { REDIS_ENTRY_BYTES, RedisPrefixIndex } from '../../../kvcache/index/redis.js';
import type { BlockHash, PrefixIndex } from '../../../kvcache/types.js';

const REDIS_URL = process.env.REDIS_URL;

/** A chain of `n` distinct block hashes; `seed` keeps chains of one test apart. */
function chain(seed: number, n: number): BlockHash[] {
  return Array.from({ length: n }, (_, i) => (BigInt(seed) << 32n) | BigInt(i + 1));
}

// Engine ids as the gateway will use them: URLs and names with characters a key format could trip on.
const A = 'http://10.0.0.1:8000';
const B = 'pod-b:ünï';
const C = 'c';

interface Bounds {
  readonly maxEntries: number;
  readonly maxBytes?: number;
}

/** What the shared suite needs from a backend besides the PrefixIndex interface. */
interface Backend<I extends PrefixIndex> {
  readonly entryBytes: number;
  make(bounds: Bounds): I;
  /** Waits until every write made so far is visible to match(). */
  settle(index: I): Promise<void>;
  entries(index: I): Promise<number>;
}

function indexSuite<I extends PrefixIndex>(backend: Backend<I>): void {
  const open: I[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((index) => index.close()));
  });
  const make = (bounds: Bounds = { maxEntries: 100_000 }): I => {
    const index = backend.make(bounds);
    open.push(index);
    return index;
  };
  const matchAfterWrites = async (index: I, hashes: readonly BlockHash[]): Promise<Record<string, number>> => {
    await backend.settle(index);
    return Object.fromEntries(await index.match(hashes));
  };

  it('counts for each engine the leading blocks it holds, and leaves out engines that hold none', async () => {
    const index = make();
    const x = chain(1, 6);
    index.recordStored(A, x);
    index.recordStored(B, x.slice(0, 2));
    index.recordStored(C, x.slice(1)); // everything but the root: no prefix at all
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 6, [B]: 2 });
    expect(await matchAfterWrites(index, [...x.slice(0, 3), ...chain(2, 3)])).toEqual({ [A]: 3, [B]: 2 });
    expect(await matchAfterWrites(index, chain(3, 4))).toEqual({});
    expect(await matchAfterWrites(index, [])).toEqual({});
  });

  it('stops at the first block an engine lacks, even if it holds later ones', async () => {
    const index = make();
    const x = chain(1, 5);
    index.recordStored(A, [x[0]!, x[1]!, x[3]!, x[4]!]);
    index.recordStored(B, x);
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 2, [B]: 5 });
  });

  it('forgets removed blocks for that engine only', async () => {
    const index = make();
    const x = chain(1, 4);
    index.recordStored(A, x);
    index.recordStored(B, x);
    index.recordRemoved(A, [x[2]!]);
    index.recordRemoved(C, [x[0]!]); // an engine it never heard of: nothing to do
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 2, [B]: 4 });
    index.recordRemoved(B, [x[0]!]);
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 2 });
  });

  it('clearEngine forgets everything of one engine, which may then store again', async () => {
    const index = make();
    const x = chain(1, 3);
    index.recordStored(A, x);
    index.recordStored(B, x);
    index.clearEngine(A);
    expect(await matchAfterWrites(index, x)).toEqual({ [B]: 3 });
    expect(await backend.entries(index)).toBe(3);
    index.recordStored(A, x.slice(0, 1));
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 1, [B]: 3 });
  });

  it('never believes an engine holds more than its capacity: its least recently seen blocks go first, leaf first', async () => {
    const index = make();
    index.setCapacity(A, 10);
    const x = chain(1, 30);
    index.recordStored(A, x);
    index.recordStored(B, x);
    // The root end of the chain is the most recently seen part of it, so the prefix survives.
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 10, [B]: 30 });
    index.setCapacity(A, 5);
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 5, [B]: 30 });
    const y = chain(2, 3);
    index.recordStored(A, y);
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 2, [B]: 30 });
    expect(await matchAfterWrites(index, y)).toEqual({ [A]: 3 });
    expect(await backend.entries(index)).toBe(35);
  });

  it('holds nothing for an engine of capacity 0', async () => {
    const index = make();
    index.setCapacity(A, 0);
    index.recordStored(A, chain(1, 3));
    expect(await matchAfterWrites(index, chain(1, 3))).toEqual({});
    expect(await backend.entries(index)).toBe(0);
  });

  it('refreshes a block seen again, so it outlives blocks seen since', async () => {
    const index = make();
    index.setCapacity(A, 20);
    const x = chain(1, 10);
    const y = chain(2, 10);
    index.recordStored(A, x);
    index.recordStored(A, y);
    index.recordStored(A, x); // x is now the more recent
    index.recordStored(A, chain(3, 5)); // five must go: y's deepest
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 10 });
    expect(await matchAfterWrites(index, y)).toEqual({ [A]: 5 });
  });

  it('rejects a capacity that is not a non-negative integer', () => {
    const index = make();
    expect(() => index.setCapacity(A, -1)).toThrow(RangeError);
    expect(() => index.setCapacity(A, 2.5)).toThrow(RangeError);
  });

  it('stays within maxEntries whatever the traffic, forgetting the least recently seen entries of any engine', async () => {
    const index = make({ maxEntries: 100 });
    const x = chain(1, 300);
    index.recordStored(A, x);
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 100 });
    expect(await backend.entries(index)).toBe(100);
    const y = chain(2, 60);
    index.recordStored(B, y);
    expect(await matchAfterWrites(index, x)).toEqual({ [A]: 40 });
    expect(await matchAfterWrites(index, y)).toEqual({ [B]: 60 });
    for (let i = 0; i < 50; i++) index.recordStored(i % 2 === 0 ? A : C, chain(100 + i, 7));
    await backend.settle(index);
    expect(await backend.entries(index)).toBe(100);
  });

  it('stays within maxBytes, counted at the backend’s bytes per entry', async () => {
    const index = make({ maxEntries: 1_000_000, maxBytes: 50 * backend.entryBytes });
    const x = chain(1, 200);
    index.recordStored(A, x);
    index.recordStored(B, x);
    expect(await matchAfterWrites(index, x)).toEqual({ [B]: 50 });
    expect(await backend.entries(index)).toBe(50);
  });

  it('makes a write visible to match() without flush or close', async () => {
    const index = make();
    index.recordStored(A, chain(1, 2));
    await vi.waitFor(async () => expect(Object.fromEntries(await index.match(chain(1, 2)))).toEqual({ [A]: 2 }), { timeout: 2000, interval: 5 });
  });

  it('rejects a bound that holds no entry', () => {
    expect(() => backend.make({ maxEntries: 0 })).toThrow(RangeError);
    expect(() => backend.make({ maxEntries: 10, maxBytes: backend.entryBytes - 1 })).toThrow(RangeError);
  });
}

describe('LocalPrefixIndex', () => {
  indexSuite<LocalPrefixIndex>({
    entryBytes: ENTRY_BYTES,
    make: (bounds) => new LocalPrefixIndex(bounds),
    settle: () => Promise.resolve(),
    entries: (index) => Promise.resolve(index.stats().entries),
  });

  it('grows its slab past the first allocation and reuses freed entries', async () => {
    const index = new LocalPrefixIndex({ maxEntries: 5000 });
    const x = chain(1, 6000);
    index.recordStored(A, x);
    expect(index.stats()).toEqual({ entries: 5000, blocks: 5000 });
    expect((await index.match(x)).get(A)).toBe(5000);
    index.clearEngine(A);
    index.recordStored(B, x.slice(0, 3000));
    index.recordStored(C, x.slice(0, 3000));
    expect(index.stats()).toEqual({ entries: 5000, blocks: 3000 });
    expect(Object.fromEntries(await index.match(x))).toEqual({ [B]: 2000, [C]: 3000 });
  });
});

describe.runIf(REDIS_URL)('RedisPrefixIndex', () => {
  // One client for inspection and cleanup; each index gets its own key prefix under this run's.
  const runPrefix = `switchyard-test:${randomUUID()}:`;
  // Made in beforeAll: vitest collects a skipped suite too, and that must not open a connection.
  let admin: Redis;
  beforeAll(() => {
    admin = new Redis(REDIS_URL!);
  });
  const fastFlush = { flushIntervalMs: 5 };

  afterAll(async () => {
    let cursor = '0';
    do {
      // Buffers: block keys are binary, and a key read back as UTF-8 text would not name the key any more.
      const [next, keys] = await admin.scanBuffer(cursor, 'MATCH', `${runPrefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await admin.unlink(...keys);
      cursor = next.toString();
    } while (cursor !== '0');
    await admin.quit();
  });

  const prefix = (): string => `${runPrefix}${randomUUID()}:`;

  indexSuite<RedisPrefixIndex>({
    entryBytes: REDIS_ENTRY_BYTES,
    make: (bounds) => new RedisPrefixIndex({ ...bounds, ...fastFlush, redis: REDIS_URL!, keyPrefix: prefix() }),
    settle: (index) => index.flush(),
    entries: (index) => admin.zcard(`${index.keyPrefix}lru`),
  });

  it('flushes on close what the interval has not sent yet', async () => {
    const keyPrefix = prefix();
    const writer = new RedisPrefixIndex({ redis: REDIS_URL!, keyPrefix, maxEntries: 1000, flushIntervalMs: 60_000 });
    writer.recordStored(A, chain(1, 3));
    writer.setCapacity(B, 1);
    writer.recordStored(B, chain(1, 3));
    await writer.close();
    const reader = new RedisPrefixIndex({ redis: REDIS_URL!, keyPrefix, maxEntries: 1000 });
    expect(Object.fromEntries(await reader.match(chain(1, 3)))).toEqual({ [A]: 3, [B]: 1 });
    await reader.close();
  });

  it('flushes as soon as a batch is full, without waiting for the interval', async () => {
    const index = new RedisPrefixIndex({ redis: REDIS_URL!, keyPrefix: prefix(), maxEntries: 1000, flushIntervalMs: 60_000, maxBatchBlocks: 8 });
    index.recordStored(A, chain(1, 8));
    await vi.waitFor(async () => expect((await index.match(chain(1, 8))).get(A)).toBe(8), { timeout: 2000, interval: 5 });
    await index.close();
  });

  it('is shared: what one replica records, another matches', async () => {
    const keyPrefix = prefix();
    const one = new RedisPrefixIndex({ redis: REDIS_URL!, keyPrefix, maxEntries: 1000, ...fastFlush });
    const two = new RedisPrefixIndex({ redis: REDIS_URL!, keyPrefix, maxEntries: 1000, ...fastFlush });
    one.recordStored(A, chain(1, 4));
    await one.flush();
    two.recordRemoved(A, [chain(1, 4)[3]!]);
    await two.flush();
    expect(Object.fromEntries(await one.match(chain(1, 4)))).toEqual({ [A]: 3 });
    await Promise.all([one.close(), two.close()]);
  });

  it('answers a lookup in one command whatever the prompt length', async () => {
    const client = new Redis(REDIS_URL!);
    const index = new RedisPrefixIndex({ redis: client, keyPrefix: prefix(), maxEntries: 100_000, ...fastFlush });
    const x = chain(1, 8192); // a 512K-token prompt at 64-token blocks
    index.recordStored(A, x);
    await index.flush();
    const sent = vi.spyOn(client, 'sendCommand');
    expect((await index.match(x)).get(A)).toBe(8192);
    expect(sent).toHaveBeenCalledTimes(1);
    await index.close();
    expect(client.status).toBe('ready'); // a shared client is left open
    await client.quit();
  });

  it('clears an engine larger than one script call may remove, in several calls', async () => {
    const index = new RedisPrefixIndex({ redis: REDIS_URL!, keyPrefix: prefix(), maxEntries: 100_000, ...fastFlush });
    const x = chain(1, 25_000);
    index.recordStored(A, x);
    index.recordStored(B, x.slice(0, 2));
    index.clearEngine(A);
    await index.flush();
    expect(Object.fromEntries(await index.match(x))).toEqual({ [B]: 2 });
    expect(await admin.zcard(`${index.keyPrefix}lru`)).toBe(2);
    expect(await admin.exists(`${index.keyPrefix}e:${A}`)).toBe(0);
    await index.close();
  });

  it('rejects match() when Redis is unreachable, and counts and logs failed writes without throwing', async () => {
    const warn = vi.fn();
    const index = new RedisPrefixIndex({ redis: 'redis://127.0.0.1:1', keyPrefix: prefix(), maxEntries: 1000, logger: { warn } });
    await expect(index.match(chain(1, 2))).rejects.toThrow();
    index.recordStored(A, chain(1, 2));
    await index.flush();
    expect(index.writeErrors.failedFlushes).toBe(1);
    expect(warn).toHaveBeenCalledWith(expect.objectContaining({ operations: 1 }), expect.stringContaining('write to Redis failed'));
    await index.close();
  });
});

describe('createPrefixIndex', () => {
  it('is in-process without a Redis URL', async () => {
    const index = createPrefixIndex({ maxEntries: 10 });
    expect(index).toBeInstanceOf(LocalPrefixIndex);
    await index.close();
  });

  it.runIf(REDIS_URL)('is Redis with one', async () => {
    const index = createPrefixIndex({ redisUrl: REDIS_URL, keyPrefix: `switchyard-test:${randomUUID()}:` });
    expect(index).toBeInstanceOf(RedisPrefixIndex);
    await index.close();
  });
});
