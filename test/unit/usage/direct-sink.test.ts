import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ControlPlaneStore, type UsageRow } from '../../../core/db/control-plane-store.js';
import { migrate } from '../../../core/db/migrate.js';
import { openDatabase, type SqlClient } from '../../../core/db/sql-client.js';
import { directUsageSink } from '../../../core/usage/direct-sink.js';
import { privatePostgresAvailable, startPrivatePostgres, type PrivatePostgres } from '../../helpers/private-postgres.js';
import { DATABASE_URL, pgliteDatabase, postgresDatabase, type TestDatabase } from '../db/harness.js';
import { flakyStore, memoryLogger, usageCounts, usageRows, within } from './fixtures.js';

function directSinkSuite(open: () => Promise<TestDatabase>): void {
  let t: TestDatabase;
  let store: ControlPlaneStore;

  beforeAll(async () => {
    t = await open();
    await migrate(t.db);
    store = new ControlPlaneStore(t.db);
  });
  afterAll(async () => {
    await t?.dispose();
  });
  beforeEach(async () => {
    await t.db.query('DELETE FROM usage');
  });

  it('stores every recorded row exactly once, with what was recorded', async () => {
    let batched = 0;
    const sink = directUsageSink({ store, batchSize: 100, flushIntervalMs: 20, onBatch: (n) => (batched += n) });
    const rows = usageRows(1050);
    for (let i = 0; i < rows.length; i += 150) {
      for (const r of rows.slice(i, i + 150)) sink.record(r);
      await new Promise((r) => setTimeout(r, 5));
    }
    // The same request recorded twice (a retried end-of-request hook) is still one row.
    for (const r of rows.slice(0, 10)) sink.record(r);
    await within(sink.flush(), 10_000, 'flush');
    expect(await usageCounts(t.db)).toEqual({ rows: 1050, distinct: 1050 });
    expect(batched).toBe(1060);
    const at = new Date('2025-01-02T03:04:05.678Z');
    sink.record({ requestId: `req-${randomUUID()}`, model: 'm', status: 429, promptTokens: 5, at });
    await within(sink.close(), 10_000, 'close');
    const { rows: stored } = await t.db.query<{ at: Date; status: number; prompt_tokens: number }>('SELECT at, status, prompt_tokens FROM usage WHERE model = $1', ['m']);
    expect(stored).toHaveLength(1);
    expect(new Date(stored[0]!.at).toISOString()).toBe(at.toISOString());
    expect(Number(stored[0]!.status)).toBe(429);
  });

  it('writes a full batch at once, a partial one only after the interval or on close()', async () => {
    const sink = directUsageSink({ store, batchSize: 50, flushIntervalMs: 60_000 });
    for (const r of usageRows(60)) sink.record(r);
    await vi.waitFor(async () => expect((await usageCounts(t.db)).rows).toBe(50), { timeout: 5000, interval: 20 });
    await new Promise((r) => setTimeout(r, 100));
    expect((await usageCounts(t.db)).rows).toBe(50);
    await within(sink.close(), 10_000, 'close');
    expect(await usageCounts(t.db)).toEqual({ rows: 60, distinct: 60 });
  });

  it('keeps the rows of a failed insert and retries them until they are stored', async () => {
    let failuresLeft = 3;
    const flaky = flakyStore(store, () => failuresLeft-- > 0);
    const errors: unknown[] = [];
    const logger = memoryLogger();
    const sink = directUsageSink({ store: flaky, batchSize: 100, flushIntervalMs: 10, retryBaseMs: 10, retryMaxMs: 50, logger, onError: (e) => errors.push(e) });
    for (const r of usageRows(300)) sink.record(r);
    await within(sink.flush(), 10_000, 'flush');
    expect(await usageCounts(t.db)).toEqual({ rows: 300, distinct: 300 });
    expect(flaky.failures).toBe(3);
    expect(errors).toHaveLength(3);
    expect(logger.warns.some((m) => m.includes('retried'))).toBe(true);
    await sink.close();
  });

  it('bounds its memory: rows beyond the cap are dropped, counted and logged as errors; the rest land', async () => {
    let down = true;
    let dropped = 0;
    const logger = memoryLogger();
    const sink = directUsageSink({
      store: flakyStore(store, () => down), batchSize: 40, flushIntervalMs: 10, retryBaseMs: 10, retryMaxMs: 30,
      maxBufferedRows: 100, logger, onDrop: (n) => (dropped += n),
    });
    for (const r of usageRows(150)) sink.record(r);
    expect(dropped).toBe(50);
    expect(logger.errors).toHaveLength(1); // loud, but once per streak rather than once per row
    expect(logger.errors[0]).toMatch(/LOST/);
    down = false;
    await within(sink.flush(), 10_000, 'flush');
    expect(await usageCounts(t.db)).toEqual({ rows: 100, distinct: 100 });
    await sink.close();
  });

  it('a row the database refuses does not hold up the others; an unknown tenant is stored without it', async () => {
    let dropped = 0;
    const logger = memoryLogger();
    const sink = directUsageSink({ store, batchSize: 100, flushIntervalMs: 10, logger, onDrop: (n) => (dropped += n) });
    const rows = usageRows(20);
    rows[3] = { ...rows[3]!, status: 2 ** 40 }; // out of range for the integer column: refused whatever we do
    rows[7] = { ...rows[7]!, tenantId: randomUUID(), keyId: randomUUID() }; // no such tenant: foreign key refused
    for (const r of rows) sink.record(r);
    await within(sink.flush(), 10_000, 'flush');
    expect(await usageCounts(t.db)).toEqual({ rows: 19, distinct: 19 });
    const { rows: orphan } = await t.db.query<{ tenant_id: string | null }>('SELECT tenant_id FROM usage WHERE request_id = $1', [rows[7]!.requestId]);
    expect(orphan).toEqual([{ tenant_id: null }]);
    expect(dropped).toBe(1);
    expect(logger.errors[0]).toMatch(/refused/);
    await sink.close();
  });
}

describe('direct usage sink on PGlite', () => {
  directSinkSuite(pgliteDatabase);
});

describe.runIf(DATABASE_URL)('direct usage sink on Postgres', () => {
  directSinkSuite(() => postgresDatabase(DATABASE_URL!));
});

describe('direct usage sink, whatever the database', () => {
  const failing = { insertUsage: async (): Promise<number> => Promise.reject(new Error('down (test)')) };

  it('record() never throws, and counts what it cannot take', () => {
    let dropped = 0;
    const sink = directUsageSink({ store: failing, logger: memoryLogger(), onDrop: (n) => (dropped += n) });
    expect(() => sink.record(null as unknown as UsageRow)).not.toThrow();
    expect(() => sink.record({ requestId: 'x', model: 'm', status: 200, promptTokens: Number.NaN })).not.toThrow();
    expect(() => sink.record({ requestId: '', model: 'm', status: 200 })).not.toThrow();
    expect(dropped).toBe(3);
  });

  it('close() gives up after closeTimeoutMs when the database stays down, and says how many rows were lost', async () => {
    let dropped = 0;
    const logger = memoryLogger();
    const sink = directUsageSink({ store: failing, flushIntervalMs: 10, retryBaseMs: 10, retryMaxMs: 20, closeTimeoutMs: 200, logger, onDrop: (n) => (dropped += n) });
    for (const r of usageRows(25)) sink.record(r);
    const started = Date.now();
    await within(sink.close(), 5000, 'close');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(dropped).toBe(25);
    expect(logger.errors.some((m) => m.includes('LOST (25)'))).toBe(true);
    sink.record(usageRows(1)[0]!);
    expect(dropped).toBe(26);
  });
});

describe.runIf(privatePostgresAvailable)('direct usage sink while Postgres restarts (private cluster)', () => {
  let server: PrivatePostgres;
  let db: SqlClient;

  beforeAll(async () => {
    server = await startPrivatePostgres();
    db = await openDatabase({ url: server.url, maxConnections: 2 });
    await migrate(db);
  }, 60_000);
  afterAll(async () => {
    await db?.close();
    await server?.destroy();
  }, 60_000);

  it('rows recorded while Postgres is stopped are kept and land once it is back', async () => {
    const sink = directUsageSink({ store: new ControlPlaneStore(db), batchSize: 50, flushIntervalMs: 10, retryBaseMs: 20, retryMaxMs: 200, logger: memoryLogger() });
    for (const r of usageRows(40)) sink.record(r);
    await within(sink.flush(), 10_000, 'first flush');
    await server.stop();
    let errors = 0;
    const sink2 = directUsageSink({ store: new ControlPlaneStore(db), batchSize: 50, flushIntervalMs: 10, retryBaseMs: 20, retryMaxMs: 200, logger: memoryLogger(), onError: () => errors++ });
    for (const r of usageRows(120)) {
      sink.record(r);
      sink2.record(r);
    }
    await vi.waitFor(() => expect(errors).toBeGreaterThan(2), { timeout: 10_000, interval: 20 });
    await server.start();
    await within(Promise.all([sink.flush(), sink2.flush()]), 20_000, 'flush after restart');
    expect(await usageCounts(db)).toEqual({ rows: 160, distinct: 160 });
    await Promise.all([sink.close(), sink2.close()]);
  }, 60_000);
});
