import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ControlPlaneStore } from '../../core/db/control-plane-store.js';
import { metricValue, startCluster, testKey, testModel, type Cluster } from '../helpers/cluster.js';
import { DATABASE_URL, pgliteDatabase, postgresDatabase, type TestDatabase } from '../unit/db/harness.js';

/**
 * LoRA adapters end to end in one gateway: the registry, the controller placing adapters on simulated engines
 * that hold at most 4 each (and answer 404 for an adapter they do not hold), and routing to where they are.
 */

const adminKey = 'sk-admin-adapters-0123456789';
const adapters = Array.from({ length: 10 }, (_, i) => `lora-${i}`);

async function call(base: string, key: string, model: string) {
  const res = await request(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: `Write SQL for ${model}` }], max_tokens: 4 }),
  });
  const json = (await res.body.json()) as any;
  return { status: res.statusCode, pod: res.headers['x-switchyard-pod'] as string | undefined, json };
}

async function residentOn(cluster: Cluster): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const [i, sim] of cluster.sims.entries()) {
    const res = await request(`${sim.url}/v1/models`);
    const data = ((await res.body.json()) as { data: { id: string; parent: string | null }[] }).data;
    out.set(`sim-${i}`, data.filter((m) => m.parent !== null).map((m) => m.id));
  }
  return out;
}

const REDIS_URL = process.env.REDIS_URL;
const variants = [
  { label: 'embedded (PGlite, in-process state)', enabled: true, redis: undefined, open: pgliteDatabase },
  {
    label: 'Redis + Postgres',
    enabled: Boolean(REDIS_URL) && Boolean(DATABASE_URL),
    redis: REDIS_URL,
    open: () => postgresDatabase(DATABASE_URL!),
  },
];

for (const variant of variants) describe.runIf(variant.enabled)(`LoRA adapters in the gateway, ${variant.label}`, () => {
  let database: TestDatabase;
  let cluster: Cluster;
  let store: ControlPlaneStore;
  const prefix = `sy-test-adapters-${randomBytes(4).toString('hex')}:`;

  beforeAll(async () => {
    database = await variant.open();
    cluster = await startCluster({
      engines: 4,
      sim: { maxLoras: 4, loraLoadMs: 2_000 },
      controlPlane: { db: database.db, adminKey },
      config: {
        adapters: { intervalMs: 200, leaseTtlMs: 2_000, requestsPerReplica: 60, redisKeyPrefix: `${prefix}adapters:` },
        limits: { redisKeyPrefix: `${prefix}rl:` },
        usage: { streamKey: `${prefix}usage`, flushIntervalMs: 20 },
        ...(variant.redis !== undefined ? { redis: { url: variant.redis } } : {}),
      },
    });
    store = cluster.gateway.store!;
    for (const name of adapters) await store.registerAdapter({ name, baseModel: testModel, source: `/adapters/${name}` });
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

  it('serves a skewed mix over 10 adapters on 4 engines of 4 slots: every request answered by an engine holding its adapter', async () => {
    // Zipf-like: lora-0 gets about a third of the requests, lora-9 a few.
    const weights = adapters.map((_, i) => 1 / (i + 1) ** 1.2);
    const total = weights.reduce((a, b) => a + b, 0);
    let seed = 7;
    const pick = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      let r = (seed / 2 ** 31) * total;
      for (let i = 0; i < weights.length; i++) if ((r -= weights[i]!) <= 0) return adapters[i]!;
      return adapters[adapters.length - 1]!;
    };
    const mix = Array.from({ length: 300 }, pick);
    const answers: Awaited<ReturnType<typeof call>>[] = [];
    for (let i = 0; i < mix.length; i += 12) answers.push(...(await Promise.all(mix.slice(i, i + 12).map((m) => call(cluster.url, testKey, m)))));

    expect(answers.filter((a) => a.status !== 200).map((a) => a.json)).toEqual([]);
    for (const [i, a] of answers.entries()) expect(a.json.model).toBe(mix[i]);

    // The hot adapter (about 100 requests in under a second) is replicated by the controller's next rounds.
    let resident = new Map<string, string[]>();
    const holders = (a: string) => [...resident.values()].filter((l) => l.includes(a)).length;
    await vi.waitFor(
      async () => {
        resident = await residentOn(cluster);
        expect(holders('lora-0')).toBeGreaterThanOrEqual(2);
      },
      { timeout: 5_000, interval: 100 },
    );
    for (const list of resident.values()) expect(list.length).toBeLessThanOrEqual(4);

    const metrics = await (await request(`${cluster.url}/metrics`)).body.text();
    // An engine without the adapter would have answered 404 and the request been retried: none was.
    expect(metricValue(metrics, 'switchyard_retries_total', { reason: 'adapter_not_resident' })).toBe(0);
    expect(metricValue(metrics, 'switchyard_adapter_cold_start_wait_seconds_count', { outcome: 'loaded' })).toBeGreaterThan(0);
    const loads = metricValue(metrics, 'switchyard_adapter_loads_total');
    const unloads = metricValue(metrics, 'switchyard_adapter_unloads_total');
    // 16 slots for 10 adapters: each loaded once, the hottest again as replicas, no churn.
    expect(loads).toBeGreaterThanOrEqual(11);
    expect(loads).toBeLessThanOrEqual(16);
    expect(unloads).toBe(0);
    console.log(`adapters: ${loads} loads, ${unloads} unloads for ${mix.length} requests`);
  });

  it('loads a cold adapter once for a burst of requests that all wait for it', async () => {
    const registered = await request(`${cluster.url}/admin/adapters`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'cold-burst', baseModel: testModel, source: '/adapters/cold-burst' }),
    });
    expect(registered.statusCode).toBe(201);
    await registered.body.dump();
    const loadsBefore = metricValue(await (await request(`${cluster.url}/metrics`)).body.text(), 'switchyard_adapter_loads_total');
    const answers = await Promise.all(Array.from({ length: 10 }, () => call(cluster.url, testKey, 'cold-burst')));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    const holders = new Set(answers.map((a) => a.pod));
    expect(holders.size).toBe(1);
    const metrics = await (await request(`${cluster.url}/metrics`)).body.text();
    expect(metricValue(metrics, 'switchyard_adapter_loads_total') - loadsBefore).toBe(1);
    const holder = [...holders][0]!;
    expect((await residentOn(cluster)).get(holder)).toContain('cold-burst');

    // Removed from the registry: unloaded from its engine at once, and no longer callable.
    const removed = await request(`${cluster.url}/admin/adapters/cold-burst`, { method: 'DELETE', headers: { authorization: `Bearer ${adminKey}` } });
    expect(removed.statusCode).toBe(204);
    await removed.body.dump();
    expect((await residentOn(cluster)).get(holder)).not.toContain('cold-burst');
    expect((await call(cluster.url, testKey, 'cold-burst')).status).toBe(404);
  });

  it('lists adapters with their base model, and hides another tenant\'s private adapter', async () => {
    await store.createTenant({ name: 'owner' });
    await store.createTenant({ name: 'other' });
    const ownerKey = (await store.createApiKey('owner')).key;
    const otherKey = (await store.createApiKey('other')).key;
    // Through the admin API, so every replica's registry cache is dropped at once.
    const registered = await request(`${cluster.url}/admin/adapters`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'owner-private', baseModel: testModel, source: '/adapters/owner-private', tenant: 'owner' }),
    });
    expect(registered.statusCode).toBe(201);
    await registered.body.dump();
    const models = async (key: string) => {
      const res = await request(`${cluster.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
      return ((await res.body.json()) as { data: { id: string; parent: string | null }[] }).data;
    };
    const ownerModels = await models(ownerKey);
    expect(ownerModels).toContainEqual(expect.objectContaining({ id: testModel, parent: null }));
    expect(ownerModels).toContainEqual(expect.objectContaining({ id: 'lora-0', parent: testModel }));
    expect(ownerModels).toContainEqual(expect.objectContaining({ id: 'owner-private', parent: testModel }));
    const otherModels = (await models(otherKey)).map((m) => m.id);
    expect(otherModels).toContain('lora-0');
    expect(otherModels).not.toContain('owner-private');
    const denied = await call(cluster.url, otherKey, 'owner-private');
    expect(denied.status).toBe(404);
    expect(denied.json.error.code).toBe('model_not_found');
    // The owner's first call finds it resident nowhere and waits for one load.
    const served = await call(cluster.url, ownerKey, 'owner-private');
    expect(served.status).toBe(200);
    expect(served.json.model).toBe('owner-private');
    // Usage names the base model and the adapter.
    await vi.waitFor(
      async () => {
        const rows = await database.db.query<{ model: string; adapter: string | null; status: number }>("SELECT model, adapter, status FROM usage WHERE adapter = 'owner-private'");
        expect(rows.rows).toEqual([{ model: testModel, adapter: 'owner-private', status: 200 }]);
      },
      { timeout: 5_000, interval: 50 },
    );
  });
});
