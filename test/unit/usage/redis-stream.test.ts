import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ControlPlaneStore, type UsageRow } from '../../../core/db/control-plane-store.js';
import { migrate } from '../../../core/db/migrate.js';
import { openDatabase, type SqlClient } from '../../../core/db/sql-client.js';
import { directUsageSink } from '../../../core/usage/direct-sink.js';
import { UsageWriter, redisUsageSink, type UsageWriterOptions } from '../../../core/usage/redis-stream.js';
import { USAGE_FIELD, encodeUsage } from '../../../core/usage/stream-codec.js';
import type { UsageStore } from '../../../core/usage/usage-sink.js';
import { privatePostgresAvailable, startPrivatePostgres, type PrivatePostgres } from '../../helpers/private-postgres.js';
import { DATABASE_URL, pgliteDatabase, postgresDatabase, type TestDatabase } from '../db/harness.js';
import { memoryLogger, usageCounts, usageRows, within } from './fixtures.js';

const REDIS_URL = process.env.REDIS_URL;
const fast = { blockMs: 100, retryBaseMs: 20, retryMaxMs: 200, batchSize: 100 } as const;

/** A Redis client that can never connect (a port nothing listens on), failing each command at once. */
async function unreachableRedis(): Promise<Redis> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  redis.on('error', () => {});
  return redis;
}

describe('Redis usage sink without Redis', () => {
  let t: TestDatabase;
  let store: ControlPlaneStore;

  beforeAll(async () => {
    t = await pgliteDatabase();
    await migrate(t.db);
    store = new ControlPlaneStore(t.db);
  });
  afterAll(async () => {
    await t?.dispose();
  });

  it('hands the rows Redis cannot take to the fallback: overflow at once, the rest at close(); none lost', async () => {
    const redis = await unreachableRedis();
    const fallback = directUsageSink({ store, flushIntervalMs: 10 });
    let dropped = 0;
    let errors = 0;
    const logger = memoryLogger();
    const sink = redisUsageSink({
      redis, streamKey: `test:usage:${randomUUID()}`, fallback, logger, maxBufferedRows: 10, retryBaseMs: 10, retryMaxMs: 20,
      closeTimeoutMs: 200, onDrop: (n) => (dropped += n), onError: () => errors++,
    });
    for (const r of usageRows(25)) sink.record(r);
    await vi.waitFor(() => expect(errors).toBeGreaterThan(1), { timeout: 5000, interval: 10 });
    await within(fallback.flush(), 5000, 'fallback flush');
    expect((await usageCounts(t.db)).rows).toBe(15); // the overflow, while Redis is still being retried
    await within(sink.close(), 5000, 'close');
    expect(await usageCounts(t.db)).toEqual({ rows: 25, distinct: 25 });
    expect(dropped).toBe(0);
    expect(logger.warns.some((m) => m.includes('fallback'))).toBe(true);
    await fallback.close();
    redis.disconnect();
  });

  it('without a fallback, rows still unsent at close() are counted and logged as lost', async () => {
    const redis = await unreachableRedis();
    let dropped = 0;
    const logger = memoryLogger();
    const sink = redisUsageSink({ redis, streamKey: `test:usage:${randomUUID()}`, logger, retryBaseMs: 10, closeTimeoutMs: 100, onDrop: (n) => (dropped += n) });
    for (const r of usageRows(7)) sink.record(r);
    expect(() => sink.record({ requestId: 'r', model: 'm', status: 1.5 })).not.toThrow();
    await within(sink.close(), 5000, 'close');
    expect(dropped).toBe(8);
    expect(logger.errors.some((m) => m.includes('LOST (7)'))).toBe(true);
    redis.disconnect();
  });
});

describe.runIf(REDIS_URL && DATABASE_URL)('Redis usage stream into Postgres', () => {
  let t: TestDatabase;
  let store: ControlPlaneStore;
  let redis: Redis;
  let streamKey: string;
  const writers: UsageWriter[] = [];

  beforeAll(async () => {
    t = await postgresDatabase(DATABASE_URL!);
    await migrate(t.db);
    store = new ControlPlaneStore(t.db);
    redis = new Redis(REDIS_URL!);
  });
  afterAll(async () => {
    redis?.disconnect();
    await t?.dispose();
  });
  beforeEach(async () => {
    streamKey = `test:usage:${randomUUID()}`;
    await t.db.query('DELETE FROM usage');
  });
  afterEach(async () => {
    await Promise.all(writers.splice(0).map((w) => w.stop(2000)));
    await redis.del(streamKey);
  });

  function writer(opts: Partial<UsageWriterOptions> = {}): UsageWriter {
    const w = new UsageWriter({ redis, streamKey, store, consumer: `w-${randomUUID().slice(0, 6)}`, logger: memoryLogger(), ...fast, ...opts });
    writers.push(w);
    w.start();
    return w;
  }

  async function streamState(): Promise<{ length: number; pending: number }> {
    const length = await redis.xlen(streamKey);
    const pending = (await redis.call('XPENDING', [streamKey, 'usage-writers'])) as [number, ...unknown[]];
    return { length, pending: Number(pending[0]) };
  }

  it('every recorded row lands exactly once, with two writers sharing the stream', async () => {
    const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
    const rows = usageRows(2000);
    // Rows recorded before any writer (or group) exists are read too.
    for (const r of rows.slice(0, 300)) sink.record(r);
    await within(sink.flush(), 5000, 'flush');
    let stored = 0;
    writer({ onBatch: (n) => (stored += n) });
    writer({ onBatch: (n) => (stored += n) });
    for (let i = 300; i < rows.length; i += 100) {
      for (const r of rows.slice(i, i + 100)) sink.record(r);
      await new Promise((r) => setImmediate(r));
    }
    for (const r of rows.slice(0, 20)) sink.record(r); // recorded twice
    await within(sink.flush(), 5000, 'flush');
    await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(2000), { timeout: 15_000, interval: 50 });
    await vi.waitFor(async () => expect(await streamState()).toEqual({ length: 0, pending: 0 }), { timeout: 5000, interval: 50 });
    expect(await usageCounts(t.db)).toEqual({ rows: 2000, distinct: 2000 });
    expect(stored).toBe(2020); // the 20 recorded twice came in later batches: stored again, as no-ops
    const { rows: one } = await t.db.query<{ prompt_tokens: number; at: Date }>('SELECT prompt_tokens, at FROM usage WHERE request_id = $1', [rows[5]!.requestId]);
    expect(Number(one[0]!.prompt_tokens)).toBe(105);
    expect(Date.now() - new Date(one[0]!.at).getTime()).toBeLessThan(60_000);
    await sink.close();
  });

  it('rows recorded in one tick go to Redis in one pipeline', async () => {
    const pipeline = vi.spyOn(redis, 'pipeline');
    try {
      const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
      for (const r of usageRows(200)) sink.record(r);
      await within(sink.flush(), 5000, 'flush');
      expect(pipeline).toHaveBeenCalledTimes(1);
      expect(await redis.xlen(streamKey)).toBe(200);
      await sink.close();
    } finally {
      pipeline.mockRestore();
    }
  });

  it('entries a consumer read and never acknowledged (it died) are claimed by another writer and stored once', async () => {
    const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
    for (const r of usageRows(250)) sink.record(r);
    await within(sink.flush(), 5000, 'flush');
    await redis.xgroup('CREATE', streamKey, 'usage-writers', '0', 'MKSTREAM');
    // The dead consumer: reads everything, then is never heard from again.
    const read = await redis.call('XREADGROUP', ['GROUP', 'usage-writers', 'dead', 'COUNT', 1000, 'STREAMS', streamKey, '>']);
    expect(read).not.toBeNull();
    expect((await streamState()).pending).toBe(250);
    writer({ claimIdleMs: 300 });
    await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(250), { timeout: 10_000, interval: 50 });
    await vi.waitFor(async () => expect(await streamState()).toEqual({ length: 0, pending: 0 }), { timeout: 5000, interval: 50 });
    expect(await usageCounts(t.db)).toEqual({ rows: 250, distinct: 250 });
    await sink.close();
  });

  it('a writer stuck in its insert has its batch taken over; when it finally inserts, nothing is doubled', async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    let stuckCalls = 0;
    const stuckStore: UsageStore = {
      insertUsage: async (rows) => {
        stuckCalls++;
        await released;
        return store.insertUsage(rows);
      },
    };
    const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
    for (const r of usageRows(80)) sink.record(r);
    await within(sink.flush(), 5000, 'flush');
    const stuck = writer({ store: stuckStore, claimIdleMs: 60_000 });
    await vi.waitFor(() => expect(stuckCalls).toBe(1), { timeout: 5000, interval: 10 });
    writer({ claimIdleMs: 300 });
    await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(80), { timeout: 10_000, interval: 50 });
    release();
    await stuck.stop(5000);
    expect(await usageCounts(t.db)).toEqual({ rows: 80, distinct: 80 });
    await vi.waitFor(async () => expect(await streamState()).toEqual({ length: 0, pending: 0 }), { timeout: 5000, interval: 50 });
    await sink.close();
  });

  it('a writer whose inserts keep failing keeps the entries in the stream; a healthy writer takes them over', async () => {
    let failures = 0;
    const broken: UsageStore = {
      insertUsage: async () => {
        failures++;
        throw new Error('connection refused (test)');
      },
    };
    const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
    for (const r of usageRows(150)) sink.record(r);
    await within(sink.flush(), 5000, 'flush');
    writer({ store: broken, claimIdleMs: 60_000, batchSize: 150 });
    await vi.waitFor(() => expect(failures).toBeGreaterThan(2), { timeout: 5000, interval: 10 });
    expect(await streamState()).toEqual({ length: 150, pending: 150 });
    writer({ claimIdleMs: 300 });
    await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(150), { timeout: 10_000, interval: 50 });
    await vi.waitFor(async () => expect(await streamState()).toEqual({ length: 0, pending: 0 }), { timeout: 5000, interval: 50 });
    expect(await usageCounts(t.db)).toEqual({ rows: 150, distinct: 150 });
    await sink.close();
  });

  it('while its Redis connection is down the sink keeps the rows, and sends them when it is back', async () => {
    const client = new Redis(REDIS_URL!);
    client.on('error', () => {});
    let errors = 0;
    const sink = redisUsageSink({ redis: client, streamKey, logger: memoryLogger(), retryBaseMs: 10, retryMaxMs: 50, onError: () => errors++ });
    client.disconnect();
    for (const r of usageRows(60)) sink.record(r);
    await vi.waitFor(() => expect(errors).toBeGreaterThan(1), { timeout: 5000, interval: 10 });
    expect(await redis.exists(streamKey)).toBe(0);
    await client.connect();
    await within(sink.flush(), 5000, 'flush');
    expect(await redis.xlen(streamKey)).toBe(60);
    writer();
    await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(60), { timeout: 10_000, interval: 50 });
    await sink.close();
    client.disconnect();
  });

  it('unreadable entries are dropped and counted without holding up the rest', async () => {
    let dropped = 0;
    const good = usageRows(10);
    await redis.xadd(streamKey, '*', USAGE_FIELD, encodeUsage(good[0]!));
    await redis.xadd(streamKey, '*', USAGE_FIELD, '{not json');
    await redis.xadd(streamKey, '*', 'other', 'x');
    await redis.xadd(streamKey, '*', USAGE_FIELD, JSON.stringify({ requestId: 'r', model: 'm' }));
    for (const r of good.slice(1)) await redis.xadd(streamKey, '*', USAGE_FIELD, encodeUsage(r));
    writer({ onDrop: (n) => (dropped += n) });
    await vi.waitFor(async () => expect(await streamState()).toEqual({ length: 0, pending: 0 }), { timeout: 10_000, interval: 50 });
    expect(await usageCounts(t.db)).toEqual({ rows: 10, distinct: 10 });
    expect(dropped).toBe(3);
  });

  it('stop() ends a blocking read at once', async () => {
    const w = writer({ blockMs: 30_000 });
    await new Promise((r) => setTimeout(r, 200)); // inside its XREADGROUP BLOCK by now
    const started = Date.now();
    await within(w.stop(), 5000, 'stop');
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe.runIf(REDIS_URL && privatePostgresAvailable)('Redis usage stream while Postgres restarts (private cluster)', () => {
  let server: PrivatePostgres;
  let db: SqlClient;
  let redis: Redis;
  const streamKey = `test:usage:${randomUUID()}`;

  beforeAll(async () => {
    server = await startPrivatePostgres();
    db = await openDatabase({ url: server.url, maxConnections: 2 });
    await migrate(db);
    redis = new Redis(REDIS_URL!);
  }, 60_000);
  afterAll(async () => {
    await redis?.del(streamKey);
    redis?.disconnect();
    await db?.close();
    await server?.destroy();
  }, 60_000);

  it('with Postgres stopped nothing is lost: the entries wait in the stream and land after the restart', async () => {
    const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
    let errors = 0;
    const w = new UsageWriter({ redis, streamKey, store: new ControlPlaneStore(db), consumer: 'pg-restart', logger: memoryLogger(), ...fast, onError: () => errors++ });
    w.start();
    try {
      const before = usageRows(50);
      for (const r of before) sink.record(r);
      await vi.waitFor(async () => expect((await usageCounts(db)).rows).toBe(50), { timeout: 10_000, interval: 50 });
      await server.stop();
      const during: UsageRow[] = usageRows(400);
      for (const r of during) sink.record(r);
      await within(sink.flush(), 5000, 'flush');
      await vi.waitFor(() => expect(errors).toBeGreaterThan(2), { timeout: 10_000, interval: 20 });
      expect(await redis.xlen(streamKey)).toBe(400);
      await server.start();
      await vi.waitFor(async () => expect((await usageCounts(db)).rows).toBe(450), { timeout: 20_000, interval: 100 });
      expect(await usageCounts(db)).toEqual({ rows: 450, distinct: 450 });
      await vi.waitFor(async () => expect(await redis.xlen(streamKey)).toBe(0), { timeout: 5000, interval: 50 });
    } finally {
      await w.stop(5000);
      await sink.close();
    }
  }, 60_000);
});

describe.runIf(REDIS_URL)('Redis usage stream into PGlite', () => {
  it('stores what the sink recorded', async () => {
    const t = await pgliteDatabase();
    const redis = new Redis(REDIS_URL!);
    const streamKey = `test:usage:${randomUUID()}`;
    const w = new UsageWriter({ redis, streamKey, store: new ControlPlaneStore(t.db), consumer: 'pglite', logger: memoryLogger(), ...fast });
    const sink = redisUsageSink({ redis, streamKey, logger: memoryLogger() });
    try {
      await migrate(t.db);
      w.start();
      for (const r of usageRows(100)) sink.record(r);
      await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(100), { timeout: 10_000, interval: 50 });
    } finally {
      await w.stop(5000);
      await sink.close();
      await redis.del(streamKey);
      redis.disconnect();
      await t.dispose();
    }
  });
});
