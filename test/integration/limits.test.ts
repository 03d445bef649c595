import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ControlPlaneStore } from '../../core/db/control-plane-store.js';
import { startCluster, startGateway, testModel, type Cluster } from '../helpers/cluster.js';
import { DATABASE_URL, pgliteDatabase, postgresDatabase, type TestDatabase } from '../unit/db/harness.js';

const REDIS_URL = process.env.REDIS_URL;
const adminKey = 'sk-admin-limits-0123456789';

const variants = [
  { label: 'embedded (PGlite, in-process counters)', enabled: true, redis: undefined, open: pgliteDatabase },
  {
    label: 'Redis + Postgres',
    enabled: REDIS_URL !== undefined && REDIS_URL !== '' && DATABASE_URL !== undefined && DATABASE_URL !== '',
    redis: REDIS_URL,
    open: () => postgresDatabase(DATABASE_URL!),
  },
];

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

async function call(base: string, key: string, body: Record<string, unknown>, path = '/v1/chat/completions', headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

const chat = (extra: Record<string, unknown> = {}) => ({ model: testModel, messages: [{ role: 'user', content: 'Tell me a short story.' }], max_tokens: 8, ...extra });

for (const variant of variants) {
  describe.runIf(variant.enabled)(`tenant limits, model access and usage on ${variant.label}`, () => {
    let database: TestDatabase;
    let cluster: Cluster;
    let store: ControlPlaneStore;
    const prefix = `sy-test-${randomBytes(4).toString('hex')}:`;

    beforeAll(async () => {
      database = await variant.open();
      cluster = await startCluster({
        engines: 2,
        sim: { outputLenMean: 16 },
        controlPlane: { db: database.db, adminKey },
        config: {
          auth: { keyCacheTtlMs: 60_000 },
          usage: { flushIntervalMs: 20, streamKey: `${prefix}usage`, claimIdleMs: 1_000 },
          limits: { redisKeyPrefix: `${prefix}rl:`, defaultMaxTokens: 600 },
          ...(variant.redis !== undefined ? { redis: { url: variant.redis } } : {}),
        },
      });
      store = cluster.gateway.store!;
    });

    afterAll(async () => {
      await cluster?.close();
      await database?.dispose();
      if (variant.redis !== undefined) {
        const redis = new Redis(variant.redis);
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
      }
    });

    async function tenantWithKey(name: string, limits: { rpm?: number; tpm?: number } = {}) {
      const tenant = await store.createTenant({ name, rpm: limits.rpm ?? null, tpm: limits.tpm ?? null });
      const key = await store.createApiKey(name);
      return { tenant, key: key.key, keyId: key.id };
    }

    async function usageRows(tenantId: string, expected: number) {
      let rows: { request_id: string; status: number; prompt_tokens: number; completion_tokens: number; engine: string | null }[] = [];
      await vi.waitFor(
        async () => {
          rows = (await database.db.query<(typeof rows)[number]>('SELECT request_id, status, prompt_tokens, completion_tokens, engine FROM usage WHERE tenant_id = $1 ORDER BY at', [tenantId])).rows;
          expect(rows.length).toBe(expected);
        },
        { timeout: 10_000, interval: 50 },
      );
      return rows;
    }

    it('refuses requests past the RPM limit with OpenAI\'s headers and error', async () => {
      const { key } = await tenantWithKey('rpm-tenant', { rpm: 3 });
      for (let i = 0; i < 3; i++) {
        const ok = await call(cluster.url, key, chat());
        expect(ok.status).toBe(200);
        expect(ok.headers['x-ratelimit-limit-requests']).toBe('3');
        expect(ok.headers['x-ratelimit-remaining-requests']).toBe(String(2 - i));
      }
      const refused = await call(cluster.url, key, chat());
      expect(refused.status).toBe(429);
      expect(refused.json).toEqual({ error: { message: expect.stringContaining('Rate limit reached'), type: 'requests', param: null, code: 'rate_limit_exceeded' } });
      expect(refused.headers['x-ratelimit-limit-requests']).toBe('3');
      expect(refused.headers['x-ratelimit-remaining-requests']).toBe('0');
      expect(refused.headers['x-ratelimit-reset-requests']).toMatch(/^\d+(\.\d+)?(ms|s)$|^\d+m\d+(\.\d+)?s$/);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    });

    it('reserves max_tokens on admission and gives back what the answer did not use', async () => {
      const { tenant, key } = await tenantWithKey('tpm-tenant', { tpm: 1_000 });
      // No max_tokens: 600 (limits.defaultMaxTokens) plus the prompt estimate is reserved, about 660 of the 1000.
      const first = await call(cluster.url, key, chat({ max_tokens: undefined }));
      expect(first.status).toBe(200);
      expect(first.headers['x-ratelimit-limit-tokens']).toBe('1000');
      const used = first.json.usage.total_tokens as number;
      expect(used).toBeLessThan(300);
      // Uncorrected, 660 + 660 would not fit; corrected to the real use, it does.
      await vi.waitFor(async () => expect((await call(cluster.url, key, chat({ max_tokens: 1 }))).status).toBe(200), { timeout: 5_000 });
      const second = await call(cluster.url, key, chat({ max_tokens: undefined }));
      expect(second.status).toBe(200);
      // A request that can never fit is told so, without a retry-after.
      const tooLarge = await call(cluster.url, key, chat({ max_tokens: 5_000 }));
      expect(tooLarge.status).toBe(429);
      expect(tooLarge.json.error.code).toBe('request_too_large');
      expect(tooLarge.headers['retry-after']).toBeUndefined();
      await usageRows(tenant.id, 4);
    });

    it('answers 404 for a registered model the tenant was not granted, and hides it from /v1/models', async () => {
      const { key } = await tenantWithKey('model-tenant');
      const admin = (method: 'PUT' | 'DELETE', path: string, body?: unknown) =>
        request(`${cluster.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
          body: body === undefined ? undefined : JSON.stringify(body),
        }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
      const listed = async () => {
        const res = await request(`${cluster.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
        return ((await res.body.json()) as { data: { id: string }[] }).data.map((m) => m.id);
      };
      // Unregistered models are open to every tenant.
      expect((await call(cluster.url, key, chat())).status).toBe(200);
      expect(await listed()).toEqual([testModel]);

      expect((await admin('PUT', `/admin/models/${testModel}`, { allTenants: false })).status).toBe(200);
      const denied = await call(cluster.url, key, chat());
      expect(denied.status).toBe(404);
      expect(denied.json.error).toEqual({ message: expect.stringContaining(testModel), type: 'not_found_error', param: 'model', code: 'model_not_found' });
      expect(await listed()).toEqual([]);

      expect((await admin('PUT', `/admin/models/${testModel}/tenants/model-tenant`)).status).toBe(200);
      expect((await call(cluster.url, key, chat())).status).toBe(200);
      expect(await listed()).toEqual([testModel]);
      expect((await admin('DELETE', `/admin/models/${testModel}`)).status).toBe(204);
    });

    it('asks the engine for stream usage, records it, and shows it only to clients that asked', async () => {
      const { tenant, key } = await tenantWithKey('stream-tenant', { tpm: 100_000 });
      const plain = await call(cluster.url, key, chat({ stream: true }));
      expect(plain.status).toBe(200);
      expect(plain.text).not.toContain('"usage":{');
      expect(plain.text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const asked = await call(cluster.url, key, chat({ stream: true, stream_options: { include_usage: true } }));
      expect(asked.text).toMatch(/"choices":\[\],"usage":\{"prompt_tokens":\d+/);
      const rows = await usageRows(tenant.id, 2);
      for (const row of rows) {
        expect(row.status).toBe(200);
        expect(row.prompt_tokens).toBeGreaterThan(0);
        expect(row.completion_tokens).toBe(8);
        expect(row.engine).toMatch(/^sim-/);
      }
    });

    it('leaves exactly one usage row per request, failures included, with a unique id even when the client reuses its request id', async () => {
      const { tenant, key } = await tenantWithKey('usage-tenant', { rpm: 4 });
      const sent = [
        await call(cluster.url, key, chat(), undefined, { 'x-request-id': 'client-id-1' }),
        await call(cluster.url, key, chat(), undefined, { 'x-request-id': 'client-id-1' }),
        await call(cluster.url, key, { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
        await call(cluster.url, key, { model: testModel, messages: 'not a list' }),
        await call(cluster.url, key, chat()),
        await call(cluster.url, key, chat()),
      ];
      expect(sent.map((a) => a.status)).toEqual([200, 200, 404, 400, 200, 429]);
      const rows = await usageRows(tenant.id, sent.length);
      expect(rows.map((r) => r.status).sort()).toEqual([200, 200, 200, 400, 404, 429].sort());
      expect(new Set(rows.map((r) => r.request_id)).size).toBe(rows.length);
      expect(rows.filter((r) => r.request_id.startsWith('client-id-1.'))).toHaveLength(2);
      const served = rows.filter((r) => r.status === 200);
      for (const r of served) expect(r.completion_tokens).toBe(8);
    });
  });
}

describe('fair queue in the gateway', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({
      engines: 1,
      // Real time: a 64-token answer takes about half a second.
      sim: { timeScale: 1 },
      config: { queue: { maxQueued: 4, maxWaitMs: 300, saturation: { maxInFlight: 1 } } },
    });
  });
  afterAll(async () => {
    await cluster?.close();
  });

  it('holds requests while the engine is saturated: 429 queue_timeout past the deadline, queue_full beyond the bound', async () => {
    const { testKey } = await import('../helpers/cluster.js');
    const long = call(cluster.url, testKey, chat({ max_tokens: 64 }));
    await vi.waitFor(() => expect(cluster.gateway.registry.snapshot()[0]!.inFlight).toBe(1), { timeout: 2_000, interval: 5 });
    const queued = [1, 2, 3, 4].map(() => call(cluster.url, testKey, chat()));
    const full = await call(cluster.url, testKey, chat());
    expect(full.status).toBe(429);
    expect(full.json.error.code).toBe('queue_full');
    const timedOut = (await Promise.all(queued))[0]!;
    expect(timedOut.status).toBe(429);
    expect(timedOut.json.error).toEqual({ message: expect.stringContaining('saturated'), type: 'rate_limit_exceeded', param: null, code: 'queue_timeout' });
    expect((await long).status).toBe(200);
    const metrics = await (await request(`${cluster.url}/metrics`)).body.text();
    expect(metrics).toMatch(/switchyard_queue_rejected_total\{reason="timeout"\} 4/);
    expect(metrics).toMatch(/switchyard_queue_rejected_total\{reason="full"\} 1/);
  });

  it('lets one waiting request through per freed slot, never more than the saturation bound', async () => {
    const { testKey } = await import('../helpers/cluster.js');
    const gateway = await startGateway(
      cluster.gateway.registry.snapshot().map((e) => e.spec),
      { queue: { maxQueued: 10, maxWaitMs: 20_000, saturation: { maxInFlight: 2 } } },
    );
    const url = await gateway.listen();
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, gateway.registry.snapshot()[0]!.inFlight)), 1);
    try {
      const answers = await Promise.all(Array.from({ length: 8 }, () => call(url, testKey, chat({ max_tokens: 12 }))));
      expect(answers.map((a) => a.status)).toEqual(Array(8).fill(200));
      expect(most).toBe(2);
    } finally {
      clearInterval(sampler);
      await gateway.close();
    }
  });
});

describe('Redis unreachable', () => {
  for (const failMode of ['open', 'closed'] as const) {
    it(`fail-${failMode}: ${failMode === 'open' ? 'admits on local counters and keeps the usage rows' : 'answers 503 rate_limit_unavailable'}`, async () => {
      const database = await pgliteDatabase();
      const cluster = await startCluster({
        engines: 1,
        controlPlane: { db: database.db },
        // Nothing listens on port 1: every Redis call fails at once.
        config: { redis: { url: 'redis://127.0.0.1:1' }, limits: { failMode }, usage: { flushIntervalMs: 20 } },
      });
      try {
        const store = cluster.gateway.store!;
        const tenant = await store.createTenant({ name: 'no-redis', rpm: 2 });
        const { key } = await store.createApiKey('no-redis');
        const answers = [];
        for (let i = 0; i < 3; i++) answers.push(await call(cluster.url, key, chat()));
        if (failMode === 'closed') {
          expect(answers.map((a) => a.status)).toEqual([503, 503, 503]);
          expect(answers[0]!.json.error.code).toBe('rate_limit_unavailable');
        } else {
          // The local counters still hold the limit on this replica.
          expect(answers.map((a) => a.status)).toEqual([200, 200, 429]);
        }
        const metrics = await (await request(`${cluster.url}/metrics`)).body.text();
        expect(metrics).toMatch(/switchyard_rate_limit_fallbacks_total 3/);
        await cluster.close();
        // Events Redis never took are written to the database directly at shutdown.
        const rows = await database.db.query<{ n: number }>('SELECT count(*)::int AS n FROM usage WHERE tenant_id = $1', [tenant.id]);
        expect(rows.rows[0]!.n).toBe(3);
      } finally {
        await cluster.close().catch(() => {});
        await database.dispose();
      }
    });
  }
});
