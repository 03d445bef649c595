import { randomBytes } from 'node:crypto';
import type { ControlPlaneStore } from '../core/db/control-plane-store.js';
import { openDatabase, type SqlClient } from '../core/db/sql-client.js';

/**
 * What bench/limits-bench.ts and bench/limits-gateway.ts share: a throw-away control-plane database and one
 * tenant whose requests pass through three rate-limit rules, with limits far above what a bench can send.
 */

/** Far above what a bench sends in a minute, and small enough that the Lua check's `limit * 60000` stays exact. */
export const BENCH_RPM = 100_000_000;
export const BENCH_TPM = 10_000_000_000;

export interface BenchDatabase {
  readonly db: SqlClient;
  /** 'pglite (in memory)' or 'postgres (schema ...)'. */
  readonly label: string;
  dispose(): Promise<void>;
}

/** PGlite in memory, or (with a URL) a fresh schema on that Postgres, dropped by dispose(). */
export async function openBenchDatabase(url: string | undefined): Promise<BenchDatabase> {
  if (url === undefined || url === '') {
    const db = await openDatabase({});
    return { db, label: 'pglite (in memory)', dispose: () => db.close() };
  }
  const schema = `sy_bench_${randomBytes(6).toString('hex')}`;
  const admin = await openDatabase({ url, maxConnections: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  const db = await openDatabase({ url, schema });
  return {
    db,
    label: `postgres (schema ${schema}, dropped at the end)`,
    async dispose() {
      await db.close();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.close();
    },
  };
}

export interface SeededTenant {
  readonly tenantId: string;
  readonly tenantName: string;
  readonly keyId: string;
  /** The scopes a request for `model` with this key is checked against. */
  readonly scopes: readonly string[];
}

/**
 * A fresh tenant (so its counters start empty) with the clear key `key`, and quotas at three scopes that all apply
 * to a request for `model` with that key: tenant-wide, the model's, the key's.
 */
export async function seedTenant(store: ControlPlaneStore, opts: { model: string; key: string }): Promise<SeededTenant> {
  const tenantName = `bench-${randomBytes(4).toString('hex')}`;
  const tenant = await store.createTenant({ name: tenantName, rpm: BENCH_RPM, tpm: BENCH_TPM });
  const key = await store.createApiKey(tenantName, { key: opts.key });
  await store.setQuota({ tenant: tenantName, model: opts.model, rpm: BENCH_RPM, tpm: BENCH_TPM });
  await store.setQuota({ tenant: tenantName, keyId: key.id, rpm: BENCH_RPM, tpm: BENCH_TPM });
  return { tenantId: tenant.id, tenantName, keyId: key.id, scopes: ['tenant', `model:${opts.model}`, `key:${key.id}`] };
}
