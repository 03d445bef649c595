import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlaneError, ControlPlaneStore, apiKeyDigest } from '../../../core/db/control-plane-store.js';
import { loadMigrations, migrate } from '../../../core/db/migrate.js';
import type { TestDatabase } from './harness.js';

/** One suite, run against PGlite always and against real Postgres when DATABASE_URL is set. */
export function controlPlaneSuite(open: () => Promise<TestDatabase>): void {
  let t: TestDatabase;
  let store: ControlPlaneStore;

  beforeAll(async () => {
    t = await open();
    store = new ControlPlaneStore(t.db);
  });
  afterAll(async () => {
    await t?.dispose();
  });

  describe('migrations', () => {
    it('apply once, then find nothing to do', async () => {
      const all = (await loadMigrations()).map((m) => m.version);
      expect(all[0]).toBe('0001');
      expect(await migrate(t.db)).toEqual(all);
      expect(await migrate(t.db)).toEqual([]);
      const { rows } = await t.db.query<{ version: string }>('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual(all);
    });

    it('concurrent runners apply each migration exactly once', async () => {
      // A second, fresh set of tables under another migration version shows the lock at work: both runners race.
      const extra = [{ version: '9001', name: 'race_probe', sql: 'CREATE TABLE race_probe (id int PRIMARY KEY); INSERT INTO race_probe VALUES (1);' }];
      const clients = t.openAnother ? [t.db, await t.openAnother(), await t.openAnother()] : [t.db, t.db, t.db];
      const results = await Promise.all(clients.map((c) => migrate(c, { migrations: extra })));
      expect(results.flat()).toEqual(['9001']);
      const { rows } = await t.db.query<{ n: unknown }>("SELECT count(*) AS n FROM schema_migrations WHERE version = '9001'");
      expect(Number(rows[0]!.n)).toBe(1);
      await t.db.exec("DROP TABLE race_probe; DELETE FROM schema_migrations WHERE version = '9001'");
    });

    it('a failing migration leaves nothing behind', async () => {
      const bad = [
        { version: '9002', name: 'ok_part', sql: 'CREATE TABLE half_done (id int)' },
        { version: '9003', name: 'broken', sql: 'CREATE TABLE nope (id no_such_type)' },
      ];
      await expect(migrate(t.db, { migrations: bad })).rejects.toThrow(/9003_broken/);
      const { rows } = await t.db.query("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'half_done'");
      expect(rows).toHaveLength(0);
      expect((await t.db.query("SELECT 1 FROM schema_migrations WHERE version IN ('9002', '9003')")).rows).toHaveLength(0);
    });
  });

  describe('tenants', () => {
    it('create, list, get, update', async () => {
      const a = await store.createTenant({ name: 'acme', weight: 2, priority: 1 });
      expect(a).toMatchObject({ name: 'acme', weight: 2, priority: 1 });
      expect(a.createdAt).toBeInstanceOf(Date);
      await store.createTenant({ name: 'beta' });
      expect((await store.listTenants()).map((x) => x.name)).toEqual(['acme', 'beta']);
      expect(await store.getTenantByName('beta')).toMatchObject({ weight: 1, priority: 0 });
      expect(await store.getTenantByName('nobody')).toBeNull();
      const u = await store.updateTenant('beta', { weight: 0.5 });
      expect(u).toMatchObject({ name: 'beta', weight: 0.5, priority: 0 });
    });

    it('duplicate names and unknown tenants are typed errors', async () => {
      await expect(store.createTenant({ name: 'acme' })).rejects.toMatchObject({ name: 'ControlPlaneError', kind: 'conflict' });
      await expect(store.updateTenant('beta', { name: 'acme' })).rejects.toMatchObject({ kind: 'conflict' });
      await expect(store.updateTenant('ghost', { weight: 3 })).rejects.toMatchObject({ kind: 'not_found' });
      await expect(store.createTenant({ name: 'w0', weight: 0 })).rejects.toBeInstanceOf(ControlPlaneError);
      await expect(store.createTenant({ name: 'r', rpm: -1 })).rejects.toMatchObject({ kind: 'invalid' });
      // the store still works after a failed transaction
      expect(await store.getTenantByName('w0')).toBeNull();
    });

    it('createTenant with limits sets the tenant-wide quota in the same transaction', async () => {
      const g = await store.createTenant({ name: 'gamma', rpm: 60, tpm: 100_000 });
      expect(await store.quotasFor(g.id)).toEqual([{ tenantId: g.id, model: null, keyId: null, rpm: 60, tpm: 100_000, scope: 'tenant' }]);
    });
  });

  describe('API keys', () => {
    it('the clear key is returned once and stored nowhere', async () => {
      const k = await store.createApiKey('acme');
      expect(k.key).toMatch(/^sk-sy-[A-Za-z0-9_-]{32}$/);
      expect(k.key.startsWith(k.prefix)).toBe(true);
      expect(k.prefix.length).toBeLessThan(12);
      const tables = await t.db.query<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
      );
      expect(tables.rows.length).toBeGreaterThanOrEqual(6);
      for (const { table_name } of tables.rows) {
        // The whole row as text covers every column, whatever its type.
        const hit = await t.db.query(`SELECT 1 FROM "${table_name}" r WHERE strpos(r::text, $1) > 0`, [k.key]);
        expect(hit.rows, `clear key found in ${table_name}`).toHaveLength(0);
      }
      const stored = await t.db.query<{ digest: string }>('SELECT digest FROM api_keys WHERE id = $1', [k.id]);
      expect(stored.rows[0]!.digest).toBe(apiKeyDigest(k.key));
      const listed = await store.listApiKeys('acme');
      expect(listed).toHaveLength(1);
      expect(listed[0]).not.toHaveProperty('key');
      expect(JSON.stringify(listed)).not.toContain(k.key);
    });

    it('lookup by digest, revocation, expiry', async () => {
      const k = await store.createApiKey('beta');
      const found = await store.findKeyByDigest(apiKeyDigest(k.key));
      expect(found).toMatchObject({ keyId: k.id, tenantName: 'beta', weight: 0.5, revoked: false, expired: false });
      expect(await store.findKeyByDigest(apiKeyDigest(`${k.key}x`))).toBeNull();

      const r1 = await store.revokeApiKey(k.id);
      expect(r1.revokedAt).toBeInstanceOf(Date);
      expect(await store.findKeyByDigest(apiKeyDigest(k.key))).toMatchObject({ revoked: true });
      const r2 = await store.revokeApiKey(k.id);
      expect(r2.revokedAt!.getTime()).toBe(r1.revokedAt!.getTime());
      await expect(store.revokeApiKey('00000000-0000-0000-0000-000000000000')).rejects.toMatchObject({ kind: 'not_found' });
      await expect(store.revokeApiKey('not-a-uuid')).rejects.toMatchObject({ kind: 'not_found' });

      const old = await store.createApiKey('beta', { expiresAt: new Date(Date.now() - 1000) });
      expect(await store.findKeyByDigest(apiKeyDigest(old.key))).toMatchObject({ revoked: false, expired: true });
      const later = await store.createApiKey('beta', { expiresAt: new Date(Date.now() + 3_600_000) });
      expect(await store.findKeyByDigest(apiKeyDigest(later.key))).toMatchObject({ expired: false });
      await expect(store.createApiKey('ghost')).rejects.toMatchObject({ kind: 'not_found' });
    });

    it('imports a chosen clear key (dev), hashed like any other; twice is a conflict, too short invalid', async () => {
      const chosen = `sk-chosen-${Date.now()}-0123456789`;
      const k = await store.createApiKey('beta', { key: chosen });
      expect(k.key).toBe(chosen);
      expect(await store.findKeyByDigest(apiKeyDigest(chosen))).toMatchObject({ keyId: k.id, tenantName: 'beta' });
      await expect(store.createApiKey('beta', { key: chosen })).rejects.toMatchObject({ kind: 'conflict' });
      await expect(store.createApiKey('beta', { key: 'short' })).rejects.toMatchObject({ kind: 'invalid' });
    });
  });

  describe('quotas', () => {
    it('one row per scope, most specific first, updates in place, null clears', async () => {
      const acme = (await store.getTenantByName('acme'))!;
      const key = await store.createApiKey('acme');
      const other = await store.createApiKey('acme');
      await store.setQuota({ tenant: 'acme', rpm: 100, tpm: 50_000 });
      await store.setQuota({ tenant: 'acme', model: 'llama', tpm: 20_000 });
      await store.setQuota({ tenant: 'acme', keyId: key.id, rpm: 10 });
      await store.setQuota({ tenant: 'acme', model: 'llama', keyId: key.id, rpm: 5, tpm: 1_000 });
      // again at the same scope: replaces, never duplicates (NULLs count as equal in the unique key)
      await store.setQuota({ tenant: 'acme', rpm: 120, tpm: 60_000 });
      await store.setQuota({ tenant: 'acme', model: 'llama', tpm: 25_000 });

      const all = await store.quotasFor(acme.id, 'llama', key.id);
      expect(all.map((q) => [q.scope, q.rpm, q.tpm])).toEqual([
        ['key+model', 5, 1_000],
        ['key', 10, null],
        ['model', null, 25_000],
        ['tenant', 120, 60_000],
      ]);
      expect((await store.quotasFor(acme.id, 'mistral', other.id)).map((q) => q.scope)).toEqual(['tenant']);
      expect((await store.quotasFor(acme.id, 'llama')).map((q) => q.scope)).toEqual(['model', 'tenant']);
      expect((await store.listQuotas('acme')).length).toBe(4);

      expect(await store.setQuota({ tenant: 'acme', model: 'llama', tpm: null })).toBeNull();
      expect((await store.quotasFor(acme.id, 'llama')).map((q) => q.scope)).toEqual(['tenant']);
      const beta = await store.createApiKey('beta');
      await expect(store.setQuota({ tenant: 'acme', keyId: beta.id, rpm: 1 })).rejects.toMatchObject({ kind: 'not_found' });
      await expect(store.setQuota({ tenant: 'ghost', rpm: 1 })).rejects.toMatchObject({ kind: 'not_found' });
      await expect(store.setQuota({ tenant: 'acme', tpm: 1.5 })).rejects.toMatchObject({ kind: 'invalid' });
    });
  });

  describe('models', () => {
    it('per-tenant grants and all-tenant models; unregistered models are open', async () => {
      const acme = (await store.getTenantByName('acme'))!;
      const beta = (await store.getTenantByName('beta'))!;
      await store.allowModel('acme', 'llama');
      await store.allowModel('acme', 'llama'); // idempotent
      await store.allowModel('acme', 'qwen');
      await store.upsertModel('public-small', { allTenants: true });
      const denied = async (id: string) => (await store.tenantPolicy(id)).deniedModels.sort();
      expect(await denied(acme.id)).toEqual([]);
      expect(await denied(beta.id)).toEqual(['llama', 'qwen']);
      await store.disallowModel('acme', 'qwen');
      expect(await denied(acme.id)).toEqual(['qwen']);
      await store.upsertModel('llama', { allTenants: true });
      expect(await denied(beta.id)).toEqual(['qwen']);
      expect(await store.listModels()).toEqual([
        { name: 'llama', allTenants: true, tenants: ['acme'] },
        { name: 'public-small', allTenants: true, tenants: [] },
        { name: 'qwen', allTenants: false, tenants: [] },
      ]);
      await store.deleteModel('qwen');
      expect(await denied(beta.id)).toEqual([]);
      await expect(store.deleteModel('qwen')).rejects.toMatchObject({ kind: 'not_found' });
      await expect(store.allowModel('ghost', 'llama')).rejects.toMatchObject({ kind: 'not_found' });
    });
  });

  describe('adapters', () => {
    it('registers public and tenant-owned adapters; lists them with the owner name; gets one', async () => {
      const acme = (await store.getTenantByName('acme'))!;
      const pub = await store.registerAdapter({ name: 'sql-lora', baseModel: 'llama', source: '/adapters/sql', rank: 16 });
      expect(pub).toEqual({ name: 'sql-lora', baseModel: 'llama', source: '/adapters/sql', rank: 16, tenantId: null, tenantName: null, createdAt: expect.any(Date) });
      const own = await store.registerAdapter({ name: 'acme-tone', baseModel: 'llama', source: 's3://bucket/acme-tone', tenant: 'acme' });
      expect(own).toMatchObject({ rank: null, tenantId: acme.id, tenantName: 'acme' });
      await store.registerAdapter({ name: 'beta-legal', baseModel: 'qwen', source: 'hf://org/beta-legal', rank: 8, tenant: 'beta' });
      await store.registerAdapter({ name: 'open-chat', baseModel: 'qwen', source: '/adapters/open', tenant: null });

      const listed = await store.listAdapters();
      expect(listed.map((a) => [a.name, a.baseModel, a.tenantName, a.rank])).toEqual([
        ['acme-tone', 'llama', 'acme', null],
        ['beta-legal', 'qwen', 'beta', 8],
        ['open-chat', 'qwen', null, null],
        ['sql-lora', 'llama', null, 16],
      ]);
      expect(listed[0]!.createdAt).toBeInstanceOf(Date);
      expect(await store.getAdapter('acme-tone')).toEqual(own);
      expect(await store.getAdapter('nope')).toBeNull();
    });

    it('a taken name is a conflict, an unknown tenant not_found, empty fields and bad ranks invalid', async () => {
      await expect(store.registerAdapter({ name: 'sql-lora', baseModel: 'qwen', source: '/elsewhere' })).rejects.toMatchObject({ name: 'ControlPlaneError', kind: 'conflict' });
      await expect(store.registerAdapter({ name: 'sql-lora', baseModel: 'llama', source: '/x', tenant: 'acme' })).rejects.toMatchObject({ kind: 'conflict' });
      await expect(store.registerAdapter({ name: 'ghostly', baseModel: 'llama', source: '/x', tenant: 'ghost' })).rejects.toMatchObject({ kind: 'not_found' });
      for (const bad of [
        { name: '', baseModel: 'llama', source: '/x' },
        { name: '  ', baseModel: 'llama', source: '/x' },
        { name: 'a', baseModel: '', source: '/x' },
        { name: 'a', baseModel: 'llama', source: '' },
        { name: 'a', baseModel: 'llama', source: '/x', rank: 0 },
        { name: 'a', baseModel: 'llama', source: '/x', rank: -4 },
        { name: 'a', baseModel: 'llama', source: '/x', rank: 1.5 },
        { name: 'a', baseModel: 'llama', source: '/x', rank: 2 ** 31 },
      ]) {
        await expect(store.registerAdapter(bad), JSON.stringify(bad)).rejects.toMatchObject({ kind: 'invalid' });
      }
      // the original is untouched, nothing half-registered
      expect(await store.getAdapter('sql-lora')).toMatchObject({ baseModel: 'llama', source: '/adapters/sql', tenantId: null });
      expect(await store.getAdapter('a')).toBeNull();
      expect(await store.getAdapter('ghostly')).toBeNull();
    });

    it('a tenant sees the public adapters and its own, never another tenant\'s; a config key (null) sees all', async () => {
      const acme = (await store.getTenantByName('acme'))!;
      const beta = (await store.getTenantByName('beta'))!;
      const names = async (id: string | null) => (await store.adaptersVisibleTo(id)).map((a) => a.name);
      expect(await names(acme.id)).toEqual(['acme-tone', 'open-chat', 'sql-lora']);
      expect(await names(beta.id)).toEqual(['beta-legal', 'open-chat', 'sql-lora']);
      expect(await names(null)).toEqual(['acme-tone', 'beta-legal', 'open-chat', 'sql-lora']);
      expect(await names('00000000-0000-0000-0000-000000000000')).toEqual(['open-chat', 'sql-lora']);
      expect(await names('not-a-uuid')).toEqual(['open-chat', 'sql-lora']);
      expect((await store.adaptersVisibleTo(acme.id))[0]).toMatchObject({ name: 'acme-tone', tenantName: 'acme', source: 's3://bucket/acme-tone' });
    });

    it('removes an adapter; an unknown one is not_found', async () => {
      await store.removeAdapter('open-chat');
      expect(await store.getAdapter('open-chat')).toBeNull();
      expect((await store.listAdapters()).map((a) => a.name)).not.toContain('open-chat');
      await expect(store.removeAdapter('open-chat')).rejects.toMatchObject({ kind: 'not_found' });
      // the name is free again
      expect(await store.registerAdapter({ name: 'open-chat', baseModel: 'llama', source: '/v2' })).toMatchObject({ source: '/v2' });
    });

    it('schema: a deleted tenant takes its adapters with it (no store call deletes tenants yet: plain SQL)', async () => {
      await store.createTenant({ name: 'doomed' });
      await store.registerAdapter({ name: 'doomed-lora', baseModel: 'llama', source: '/d', tenant: 'doomed' });
      await t.db.query("DELETE FROM tenants WHERE name = 'doomed'");
      expect(await store.getAdapter('doomed-lora')).toBeNull();
      expect(await store.getAdapter('sql-lora')).not.toBeNull();
    });
  });

  describe('usage', () => {
    it('is idempotent on request id and sums per tenant and model', async () => {
      const acme = (await store.getTenantByName('acme'))!;
      const beta = (await store.getTenantByName('beta'))!;
      const at = new Date('2026-01-01T00:00:00Z');
      const rows = [
        { requestId: 'r1', tenantId: acme.id, model: 'llama', promptTokens: 100, cachedTokens: 64, completionTokens: 10, status: 200, ttftMs: 12.5, latencyMs: 80, engine: 'e1', at },
        { requestId: 'r2', tenantId: acme.id, model: 'llama', promptTokens: 50, cachedTokens: 0, completionTokens: 5, status: 200, at },
        { requestId: 'r3', tenantId: acme.id, model: 'qwen', promptTokens: 7, completionTokens: 0, status: 500, at: new Date('2026-02-01T00:00:00Z') },
        { requestId: 'r4', tenantId: beta.id, model: 'llama', promptTokens: 1, completionTokens: 1, status: 200, adapter: 'sql-lora', at },
        { requestId: 'r5', model: 'llama', status: 401, at },
      ];
      expect(await store.insertUsage(rows)).toBe(5);
      // the same events re-delivered (a writer killed mid-batch), plus one new: only the new one lands
      expect(await store.insertUsage([...rows, { requestId: 'r6', tenantId: beta.id, model: 'llama', promptTokens: 2, completionTokens: 3, status: 200, at }])).toBe(1);
      expect(await store.insertUsage([rows[0]!, rows[0]!])).toBe(0);
      const count = await t.db.query<{ n: unknown }>("SELECT count(*) AS n FROM usage WHERE request_id = 'r1'");
      expect(Number(count.rows[0]!.n)).toBe(1);

      expect(await store.usageSummary()).toEqual([
        { tenant: 'acme', model: 'llama', requests: 2, errors: 0, promptTokens: 150, cachedTokens: 64, completionTokens: 15 },
        { tenant: 'acme', model: 'qwen', requests: 1, errors: 1, promptTokens: 7, cachedTokens: 0, completionTokens: 0 },
        { tenant: 'beta', model: 'llama', requests: 2, errors: 0, promptTokens: 3, cachedTokens: 0, completionTokens: 4 },
        { tenant: null, model: 'llama', requests: 1, errors: 1, promptTokens: 0, cachedTokens: 0, completionTokens: 0 },
      ]);
      expect((await store.usageSummary({ tenant: 'acme', since: new Date('2026-01-15T00:00:00Z') })).map((r) => [r.model, r.requests])).toEqual([['qwen', 1]]);
      expect(await store.usageSummary({ tenant: 'gamma' })).toEqual([]);
      await expect(store.usageSummary({ tenant: 'ghost' })).rejects.toMatchObject({ kind: 'not_found' });
    });

    it('inserts large batches', async () => {
      const gamma = (await store.getTenantByName('gamma'))!;
      const many = Array.from({ length: 2500 }, (_, i) => ({ requestId: `bulk-${i}`, tenantId: gamma.id, model: 'm', promptTokens: 1, completionTokens: 2, status: 200 }));
      expect(await store.insertUsage(many)).toBe(2500);
      expect(await store.insertUsage(many.slice(1000, 1500))).toBe(0);
      expect(await store.usageSummary({ tenant: 'gamma' })).toEqual([
        { tenant: 'gamma', model: 'm', requests: 2500, errors: 0, promptTokens: 2500, cachedTokens: 0, completionTokens: 5000 },
      ]);
    });
  });
}
