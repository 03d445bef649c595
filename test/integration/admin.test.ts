import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Fastify from 'fastify';
import { apiKeyDigest } from '../../core/db/control-plane-store.js';
import { localInvalidationBus, type Invalidation } from '../../core/state/invalidation-bus.js';
import { adminRoutes } from '../../router/admin.js';
import { authHeaders, chatBody, startCluster, startGateway, testModel, type Cluster } from '../helpers/cluster.js';
import { DATABASE_URL, pgliteDatabase, postgresDatabase, type TestDatabase } from '../unit/db/harness.js';

const cli = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const adminKey = 'sk-admin-test-0123456789';
const cacheTtlMs = 5_000;

/** The admin CLI as a child process; async so the in-process gateway keeps serving meanwhile. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'admin', ...args], {
      env: { ...process.env, SWITCHYARD_ADMIN_KEY: adminKey, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function adminCall(base: string, method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', path: string, body?: unknown, key: string | null = adminKey) {
  const res = await request(`${base}${path}`, {
    method,
    headers: { ...(key !== null ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, json: (text === '' ? null : JSON.parse(text)) as any };
}

async function chat(base: string, key: string): Promise<number> {
  const res = await request(`${base}/v1/chat/completions`, { method: 'POST', headers: authHeaders({ authorization: `Bearer ${key}` }), body: chatBody() });
  await res.body.dump();
  return res.statusCode;
}

function expectErrorShape(json: any, type: string, code?: string): void {
  expect(json).toEqual({ error: { message: expect.any(String), type, param: expect.toSatisfy((p: unknown) => p === null || typeof p === 'string'), code: code ?? expect.anything() } });
}

const variants: { label: string; open: () => Promise<TestDatabase>; enabled: boolean }[] = [
  { label: 'PGlite', open: pgliteDatabase, enabled: true },
  { label: 'Postgres', open: () => postgresDatabase(DATABASE_URL!), enabled: DATABASE_URL !== undefined && DATABASE_URL !== '' },
];

for (const variant of variants) {
  describe.runIf(variant.enabled)(`admin API and CLI on ${variant.label}`, () => {
    let database: TestDatabase;
    let cluster: Cluster;
    let url: string;

    beforeAll(async () => {
      database = await variant.open();
      cluster = await startCluster({ engines: 1, config: { auth: { keyCacheTtlMs: cacheTtlMs } }, controlPlane: { db: database.db, adminKey } });
      url = cluster.url;
    });
    afterAll(async () => {
      await cluster?.close();
      await database?.dispose();
    });

    it('refuses a missing admin key (401) and a wrong one or a tenant key (403), OpenAI-shaped', async () => {
      const missing = await adminCall(url, 'GET', '/admin/tenants', undefined, null);
      expect(missing.status).toBe(401);
      expectErrorShape(missing.json, 'authentication_error', 'missing_admin_key');
      const wrong = await adminCall(url, 'GET', '/admin/tenants', undefined, 'sk-not-the-admin-key');
      expect(wrong.status).toBe(403);
      expectErrorShape(wrong.json, 'permission_error', 'invalid_admin_key');
      const tenantKey = await adminCall(url, 'GET', '/admin/tenants', undefined, authHeaders().authorization!.slice(7));
      expect(tenantKey.status).toBe(403);
    });

    it('creates, lists and updates tenants; duplicates are 409, unknown 404, bad bodies 400', async () => {
      const created = await adminCall(url, 'POST', '/admin/tenants', { name: 'acme', weight: 2, priority: 1, rpm: 60 });
      expect(created.status).toBe(201);
      expect(created.json).toMatchObject({ name: 'acme', weight: 2, priority: 1, rpm: 60, tpm: null, id: expect.any(String) });

      const dup = await adminCall(url, 'POST', '/admin/tenants', { name: 'acme' });
      expect(dup.status).toBe(409);
      expectErrorShape(dup.json, 'invalid_request_error', 'conflict');

      const bad = await adminCall(url, 'POST', '/admin/tenants', { name: 'x', weight: -1 });
      expect(bad.status).toBe(400);
      expectErrorShape(bad.json, 'invalid_request_error');
      expect((await adminCall(url, 'POST', '/admin/tenants', { name: 'x', colour: 'red' })).status).toBe(400);

      const updated = await adminCall(url, 'PATCH', '/admin/tenants/acme', { tpm: 5000, weight: 3 });
      expect(updated.status).toBe(200);
      expect(updated.json).toMatchObject({ name: 'acme', weight: 3, rpm: 60, tpm: 5000 });
      const missing = await adminCall(url, 'PATCH', '/admin/tenants/nobody', { weight: 3 });
      expect(missing.status).toBe(404);
      expectErrorShape(missing.json, 'not_found_error', 'not_found');

      const list = await adminCall(url, 'GET', '/admin/tenants');
      expect(list.json.object).toBe('list');
      expect(list.json.data.find((t: { name: string }) => t.name === 'acme')).toMatchObject({ weight: 3, rpm: 60, tpm: 5000 });
    });

    it('creates a key that works on /v1, never lists it, and revocation bites within the cache TTL', async () => {
      await adminCall(url, 'POST', '/admin/tenants', { name: 'keys-http' });
      const created = await adminCall(url, 'POST', '/admin/tenants/keys-http/keys', {});
      expect(created.status).toBe(201);
      const key: string = created.json.key;
      expect(key).toMatch(/^sk-sy-/);
      expect(key.startsWith(created.json.prefix)).toBe(true);

      expect(await chat(url, key)).toBe(200);
      const principal = await cluster.gateway.tenantKeys!.resolve(key);
      expect(principal).toMatchObject({ id: 'keys-http', keyId: created.json.id, tenant: { name: 'keys-http', weight: 1, priority: 0 } });
      // config keys keep working next to database keys
      expect(await chat(url, authHeaders().authorization!.slice(7))).toBe(200);

      const list = await adminCall(url, 'GET', '/admin/tenants/keys-http/keys');
      expect(list.json.data).toEqual([expect.objectContaining({ id: created.json.id, prefix: created.json.prefix, revokedAt: null })]);
      const listText = JSON.stringify(list.json);
      expect(listText).not.toContain(key);
      expect(listText).not.toContain(apiKeyDigest(key));
      expect(JSON.stringify((await adminCall(url, 'GET', '/admin/tenants')).json)).not.toContain(key);

      const revokedAt = Date.now();
      const revoked = await adminCall(url, 'POST', `/admin/keys/${created.json.id}/revoke`, {});
      expect(revoked.status).toBe(200);
      expect(revoked.json.revokedAt).toEqual(expect.any(String));
      let status = await chat(url, key);
      while (status !== 401 && Date.now() - revokedAt < cacheTtlMs + 1_000) {
        await new Promise((r) => setTimeout(r, 100));
        status = await chat(url, key);
      }
      expect(status).toBe(401);
      expect(Date.now() - revokedAt).toBeLessThan(cacheTtlMs);

      const unknown = await adminCall(url, 'POST', '/admin/keys/00000000-0000-0000-0000-000000000000/revoke', {});
      expect(unknown.status).toBe(404);
      expect((await adminCall(url, 'POST', '/admin/tenants/nobody/keys', {})).status).toBe(404);
    });

    it('another replica on the same database stops accepting a revoked key once its cache entry expires', async () => {
      const ttl = 400;
      const replica = await startGateway(cluster.sims.map((sim, i) => ({ id: `r-${i}`, url: sim.url, kind: 'vllm', models: [sim.model], labels: {} })), { auth: { keyCacheTtlMs: ttl } }, { db: database.db });
      const replicaUrl = await replica.listen();
      try {
        await adminCall(url, 'POST', '/admin/tenants', { name: 'replica-co' });
        const created = await adminCall(url, 'POST', '/admin/tenants/replica-co/keys', {});
        const key: string = created.json.key;
        expect(await chat(replicaUrl, key)).toBe(200); // now cached on the replica
        const revokedAt = Date.now();
        await adminCall(url, 'POST', `/admin/keys/${created.json.id}/revoke`, {});
        let status = await chat(replicaUrl, key);
        while (status !== 401 && Date.now() - revokedAt < ttl + 2_000) {
          await new Promise((r) => setTimeout(r, 25));
          status = await chat(replicaUrl, key);
        }
        expect(status).toBe(401);
        expect(Date.now() - revokedAt).toBeLessThan(ttl + 250);
      } finally {
        await replica.close();
      }
    });

    it('rejects an unknown database key with 401 and caches the miss', async () => {
      const res = await request(`${url}/v1/models`, { headers: { authorization: 'Bearer sk-sy-not-a-real-key-at-all' } });
      expect(res.statusCode).toBe(401);
      expectErrorShape(await res.body.json(), 'authentication_error', 'invalid_api_key');
    });

    it('sets quotas at each scope', async () => {
      await adminCall(url, 'POST', '/admin/tenants', { name: 'quota-co' });
      const key = await adminCall(url, 'POST', '/admin/tenants/quota-co/keys', {});
      const q = await adminCall(url, 'PUT', '/admin/quotas', { tenant: 'quota-co', model: testModel, keyId: key.json.id, rpm: 10 });
      expect(q.status).toBe(200);
      expect(q.json).toMatchObject({ scope: 'key+model', rpm: 10, tpm: null });
      expect((await adminCall(url, 'PUT', '/admin/quotas', { tenant: 'quota-co', keyId: '00000000-0000-0000-0000-000000000000', rpm: 1 })).status).toBe(404);
      expect((await adminCall(url, 'PUT', '/admin/quotas', { tenant: 'quota-co', rpm: -1 })).status).toBe(400);
      const cleared = await adminCall(url, 'PUT', '/admin/quotas', { tenant: 'quota-co', model: testModel, keyId: key.json.id });
      expect(cleared.json).toMatchObject({ deleted: true });
    });

    it('summarises usage per tenant and model, filtered by tenant and time', async () => {
      await adminCall(url, 'POST', '/admin/tenants', { name: 'usage-co' });
      const store = cluster.gateway.store!;
      const tenant = (await store.getTenantByName('usage-co'))!;
      const old = new Date('2020-01-01T00:00:00Z');
      await store.insertUsage([
        { requestId: `u1-${variant.label}`, tenantId: tenant.id, model: 'm1', status: 200, promptTokens: 10, cachedTokens: 4, completionTokens: 5 },
        { requestId: `u2-${variant.label}`, tenantId: tenant.id, model: 'm1', status: 500, promptTokens: 3 },
        { requestId: `u3-${variant.label}`, tenantId: tenant.id, model: 'm2', status: 200, promptTokens: 7, at: old },
      ]);
      const all = await adminCall(url, 'GET', '/admin/usage?tenant=usage-co');
      expect(all.status).toBe(200);
      expect(all.json).toEqual({
        object: 'list',
        since: null,
        data: [
          { tenant: 'usage-co', model: 'm1', requests: 2, errors: 1, promptTokens: 13, cachedTokens: 4, completionTokens: 5 },
          { tenant: 'usage-co', model: 'm2', requests: 1, errors: 0, promptTokens: 7, cachedTokens: 0, completionTokens: 0 },
        ],
      });
      const recent = await adminCall(url, 'GET', '/admin/usage?tenant=usage-co&since=2021-01-01T00:00:00Z');
      expect(recent.json.data.map((r: { model: string }) => r.model)).toEqual(['m1']);
      expect((await adminCall(url, 'GET', '/admin/usage?since=yesterday')).status).toBe(400);
      expect((await adminCall(url, 'GET', '/admin/usage?tenant=nobody')).status).toBe(404);
    });

    it('registers, lists and removes adapters; duplicates 409, unknown tenant or adapter 404, bad bodies 400', async () => {
      await adminCall(url, 'POST', '/admin/tenants', { name: 'lora-co' });
      const owned = await adminCall(url, 'POST', '/admin/adapters', { name: 'lora-co-sql', baseModel: testModel, source: '/adapters/sql', rank: 16, tenant: 'lora-co' });
      expect(owned.status).toBe(201);
      expect(owned.json).toEqual({
        name: 'lora-co-sql', baseModel: testModel, source: '/adapters/sql', rank: 16, tenant: 'lora-co', tenantId: expect.any(String), createdAt: expect.any(String),
      });
      const pub = await adminCall(url, 'POST', '/admin/adapters', { name: 'org/public-chat', baseModel: testModel, source: 'hf://org/public-chat', tenant: null });
      expect(pub.status).toBe(201);
      expect(pub.json).toMatchObject({ tenant: null, tenantId: null, rank: null });

      const list = await adminCall(url, 'GET', '/admin/adapters');
      expect(list.status).toBe(200);
      expect(list.json.object).toBe('list');
      // Resident nowhere yet: nothing asked for them, so the controller placed neither.
      expect(list.json.data).toEqual(expect.arrayContaining([{ ...owned.json, engines: [] }, { ...pub.json, engines: [] }]));

      const dup = await adminCall(url, 'POST', '/admin/adapters', { name: 'lora-co-sql', baseModel: 'other', source: '/x' });
      expect(dup.status).toBe(409);
      expectErrorShape(dup.json, 'invalid_request_error', 'conflict');
      const ghost = await adminCall(url, 'POST', '/admin/adapters', { name: 'ghost-lora', baseModel: testModel, source: '/x', tenant: 'nobody' });
      expect(ghost.status).toBe(404);
      expectErrorShape(ghost.json, 'not_found_error', 'not_found');
      for (const bad of [
        { name: 'b', baseModel: testModel },
        { name: '', baseModel: testModel, source: '/x' },
        { name: 'b', baseModel: testModel, source: '/x', rank: 0 },
        { name: 'b', baseModel: testModel, source: '/x', rank: 'big' },
        { name: 'b', baseModel: testModel, source: '/x', colour: 'red' },
        { name: 'b', baseModel: testModel, source: '/x', tenant: '' },
      ]) {
        const res = await adminCall(url, 'POST', '/admin/adapters', bad);
        expect(res.status, JSON.stringify(bad)).toBe(400);
        expectErrorShape(res.json, 'invalid_request_error');
      }
      expect((await adminCall(url, 'GET', '/admin/adapters')).json.data.map((a: { name: string }) => a.name)).not.toContain('b');

      const removed = await adminCall(url, 'DELETE', `/admin/adapters/${encodeURIComponent('org/public-chat')}`);
      expect(removed.status).toBe(204);
      expect(removed.json).toBeNull();
      const again = await adminCall(url, 'DELETE', `/admin/adapters/${encodeURIComponent('org/public-chat')}`);
      expect(again.status).toBe(404);
      expectErrorShape(again.json, 'not_found_error', 'not_found');
      expect((await adminCall(url, 'GET', '/admin/adapters')).json.data.map((a: { name: string }) => a.name)).toEqual(['lora-co-sql']);
      expect((await adminCall(url, 'DELETE', '/admin/adapters/lora-co-sql', undefined, null)).status).toBe(401);
      expect((await adminCall(url, 'DELETE', '/admin/adapters/lora-co-sql')).status).toBe(204);
    });

    it('lists where each adapter is placed when given adapterStates, and tells every replica of adapter changes', async () => {
      const bus = localInvalidationBus();
      const heard: Invalidation[] = [];
      bus.subscribe((m) => heard.push(m));
      const app = Fastify();
      const states = new Map([['states-a', [{ engine: 'e0', state: 'resident' }, { engine: 'e1', state: 'failed', reason: 'out of memory' }]]]);
      await app.register(async (admin) => adminRoutes(admin, { store: cluster.gateway.store!, adminKey, bus, adapterStates: async () => states }));
      const base = await app.listen({ host: '127.0.0.1', port: 0 });
      try {
        expect((await adminCall(base, 'POST', '/admin/adapters', { name: 'states-a', baseModel: testModel, source: '/a' })).status).toBe(201);
        expect((await adminCall(base, 'POST', '/admin/adapters', { name: 'states-b', baseModel: testModel, source: '/b' })).status).toBe(201);
        const list = await adminCall(base, 'GET', '/admin/adapters');
        const byName = new Map(list.json.data.map((a: { name: string }) => [a.name, a]));
        expect(byName.get('states-a')).toMatchObject({ engines: [{ engine: 'e0', state: 'resident' }, { engine: 'e1', state: 'failed', reason: 'out of memory' }] });
        expect(byName.get('states-b')).toMatchObject({ engines: [] });
        expect((await adminCall(base, 'DELETE', '/admin/adapters/states-a')).status).toBe(204);
        await cluster.gateway.store!.removeAdapter('states-b');
        expect(heard).toEqual([{ kind: 'all' }, { kind: 'all' }, { kind: 'all' }]);
      } finally {
        await app.close();
        await bus.close();
      }
    });

    it('the CLI registers, lists and removes adapters', async () => {
      expect((await runCli(['--url', url, 'tenant', 'create', 'cli-lora-co'])).code).toBe(0);
      const reg = await runCli(['--url', url, 'adapter', 'register', 'cli-sql', '--base', testModel, '--path', '/adapters/cli-sql', '--tenant', 'cli-lora-co', '--rank', '8']);
      expect(reg.code, reg.stderr).toBe(0);
      expect(reg.stdout).toMatch(/^NAME\s+BASE\s+OWNER\s+RANK\s+ENGINES$/m);
      expect(reg.stdout).toMatch(new RegExp(`^cli-sql\\s+${testModel}\\s+cli-lora-co\\s+8\\s+-$`, 'm'));
      const pub = await runCli(['--url', url, 'adapter', 'register', 'cli-open', '--base', testModel, '--path', 'hf://org/open', '--public']);
      expect(pub.code, pub.stderr).toBe(0);

      const list = await runCli(['--url', url, 'adapter', 'list']);
      expect(list.code, list.stderr).toBe(0);
      expect(list.stdout).toMatch(/^NAME\s+BASE\s+OWNER\s+RANK\s+ENGINES$/m);
      expect(list.stdout).toMatch(/^cli-sql\s+\S+\s+cli-lora-co\s+8\s+-$/m);
      expect(list.stdout).toMatch(/^cli-open\s+\S+\s+\(public\)\s+-\s+-$/m);
      const json = await runCli(['--url', url, 'adapter', 'list', '--json']);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toEqual(
        expect.arrayContaining([expect.objectContaining({ name: 'cli-sql', baseModel: testModel, source: '/adapters/cli-sql', rank: 8, tenant: 'cli-lora-co' })]),
      );

      const dup = await runCli(['--url', url, 'adapter', 'register', 'cli-sql', '--base', testModel, '--path', '/x', '--public']);
      expect(dup.code).toBe(1);
      expect(dup.stderr).toContain('409');
      const ghost = await runCli(['--url', url, 'adapter', 'register', 'cli-ghost', '--base', testModel, '--path', '/x', '--tenant', 'nobody']);
      expect(ghost.code).toBe(1);
      expect(ghost.stderr).toContain('404');

      const removed = await runCli(['--url', url, 'adapter', 'remove', 'cli-sql']);
      expect(removed.code, removed.stderr).toBe(0);
      expect(removed.stdout).toContain('cli-sql');
      expect((await runCli(['--url', url, 'adapter', 'list'])).stdout).not.toContain('cli-sql');
      const missing = await runCli(['--url', url, 'adapter', 'remove', 'cli-sql']);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('404');

      // usage errors: exit 2 before any call
      const neither = await runCli(['--url', url, 'adapter', 'register', 'x', '--base', testModel, '--path', '/x']);
      expect(neither.code).toBe(2);
      expect(neither.stderr).toContain('--public');
      expect((await runCli(['--url', url, 'adapter', 'register', 'x', '--base', testModel, '--path', '/x', '--public', '--tenant', 'cli-lora-co'])).code).toBe(2);
      expect((await runCli(['--url', url, 'adapter', 'register', 'x', '--path', '/x', '--public'])).code).toBe(2);
      expect((await runCli(['--url', url, 'adapter', 'register', 'x', '--base', testModel, '--public'])).code).toBe(2);
      expect((await runCli(['--url', url, 'adapter', 'register', 'x', '--base', testModel, '--path', '/x', '--public', '--rank', '0'])).code).toBe(2);
      expect((await runCli(['--url', url, 'adapter', 'register', '--base', testModel, '--path', '/x', '--public'])).code).toBe(2);
      expect((await runCli(['--url', url, 'adapter', 'list', '--public'])).code).toBe(2);
      expect((await runCli(['--url', url, 'adapter', 'list'])).stdout).not.toMatch(/^x\s/m);
    });

    it('serves no /admin route at all without an admin key (404)', async () => {
      const gw = await startGateway([], {}, { db: database.db });
      const base = await gw.listen();
      try {
        const res = await adminCall(base, 'GET', '/admin/tenants');
        expect(res.status).toBe(404);
        expectErrorShape(res.json, 'not_found_error', 'unknown_url');
      } finally {
        await gw.close();
      }
    });

    it('the CLI manages tenants and keys: the key is the last line, works, is never listed, and revocation bites', async () => {
      const created = await runCli(['--url', url, 'tenant', 'create', 'cli-co', '--weight', '2', '--rpm', '100']);
      expect(created.code, created.stderr).toBe(0);
      expect(created.stdout).toMatch(/cli-co\s+2\s+0\s+100\s+-/);

      const dup = await runCli(['--url', url, 'tenant', 'create', 'cli-co']);
      expect(dup.code).toBe(1);
      expect(dup.stderr).toContain('409');
      expect(dup.stderr).toContain('already exists');

      const updated = await runCli(['--url', url, 'tenant', 'update', 'cli-co', '--tpm', '9000', '--priority', '2']);
      expect(updated.code, updated.stderr).toBe(0);
      expect(updated.stdout).toMatch(/cli-co\s+2\s+2\s+100\s+9000/);

      const made = await runCli(['--url', url, 'key', 'create', '--tenant', 'cli-co']);
      expect(made.code, made.stderr).toBe(0);
      const lines = made.stdout.trimEnd().split('\n');
      const key = lines[lines.length - 1]!;
      expect(key).toMatch(/^sk-sy-[A-Za-z0-9_-]+$/);
      expect(await chat(url, key)).toBe(200);

      const listed = await runCli(['--url', url, 'key', 'list', '--tenant', 'cli-co']);
      expect(listed.code).toBe(0);
      expect(listed.stdout).not.toContain(key);
      expect(listed.stdout).not.toContain(apiKeyDigest(key));
      const keyId = /^([0-9a-f-]{36})\s/m.exec(listed.stdout)?.[1];
      expect(keyId).toBeDefined();
      const tenants = await runCli(['--url', url, 'tenant', 'list']);
      expect(tenants.stdout).toContain('cli-co');
      expect(tenants.stdout).not.toContain(key);

      const quota = await runCli(['--url', url, 'quota', 'set', '--tenant', 'cli-co', '--model', testModel, '--key', keyId!, '--rpm', '5']);
      expect(quota.code, quota.stderr).toBe(0);
      expect(quota.stdout).toContain('key+model');

      const revoked = await runCli(['--url', url, 'key', 'revoke', keyId!]);
      expect(revoked.code, revoked.stderr).toBe(0);
      expect(await chat(url, key)).toBe(401);

      const usage = await runCli(['--url', url, 'usage', '--json', '--since', '2000-01-01T00:00:00Z']);
      expect(usage.code, usage.stderr).toBe(0);
      expect(Array.isArray(JSON.parse(usage.stdout))).toBe(true);
      const usageText = await runCli(['--url', url, 'usage', '--tenant', 'cli-co']);
      expect(usageText.code).toBe(0);
      expect(usageText.stdout).toMatch(/^TENANT\s+MODEL\s+REQUESTS/);
    });

    it('the CLI exits 1 on API errors (wrong admin key, unreachable) and 2 on usage errors', async () => {
      const wrong = await runCli(['--url', url, 'tenant', 'list'], { SWITCHYARD_ADMIN_KEY: 'nope' });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toContain('403');
      const unreachable = await runCli(['--url', 'http://127.0.0.1:1', 'tenant', 'list']);
      expect(unreachable.code).toBe(1);
      expect(unreachable.stderr).toContain('cannot reach');
      expect((await runCli(['--url', url, 'tenant', 'frobnicate'])).code).toBe(2);
      expect((await runCli(['--url', url, 'key', 'create'])).code).toBe(2);
      expect((await runCli(['--url', url, 'tenant', 'create', 'x', '--rpm', 'lots'])).code).toBe(2);
      expect((await runCli(['--url', url, 'usage', '--since', 'yesterday'])).code).toBe(2);
      expect((await runCli(['--url', url, 'tenant', 'list'], { SWITCHYARD_ADMIN_KEY: '' })).code).toBe(2);
    });
  });
}
