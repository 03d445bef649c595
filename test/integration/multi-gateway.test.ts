import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { openDatabase, type SqlClient } from '../../core/db/sql-client.js';
import { metricValue, spawnSim, testModel, type SimProcess } from '../helpers/cluster.js';
import { killOnExit, spawnGateway, type GatewayProcess } from '../helpers/gateway-process.js';
import { privatePostgresAvailable, startPrivatePostgres, type PrivatePostgres } from '../helpers/private-postgres.js';

/**
 * Gateway replicas as separate `switchyard serve` processes sharing one Redis and one Postgres, in front of
 * simulated engines (processes too): what holds across replicas only because the state is shared.
 *
 * - Postgres is a private cluster of this file (test/helpers/private-postgres.ts): the child processes need a
 *   database of their own they can reach by URL, and one test stops and restarts it.
 * - Redis is the shared server; every key this file's gateways write starts with a random prefix (rate limits and
 *   the invalidation channel, the usage stream, the prefix index) and is deleted afterwards.
 * - Three gateways (`trio`) share one config in front of two quick engines. Two more, each alone in front of one
 *   slow engine, test the fair queue, whose settings (saturation, deadline) are per gateway.
 */

const REDIS_URL = process.env.REDIS_URL;
const DATABASE_URL = process.env.DATABASE_URL;
const enabled = Boolean(REDIS_URL) && Boolean(DATABASE_URL) && privatePostgresAvailable;

const adminKey = `sk-admin-${randomBytes(12).toString('hex')}`;
const run = randomBytes(4).toString('hex');
const prefix = `switchyard-test:multi-gw:${run}:`;
const rateLimitPrefix = `${prefix}rl:`;
const prompt = 'Hello there, how are you today?';
/** Wall-clock delay of the slow engine per output token (the sim's slow fault, not scaled by --time-scale). */
const slowMsPerToken = 10;
/** limits.defaultMaxTokens of every gateway: the reservation for a request without max_tokens. */
const defaultMaxTokens = 1000;
/** Duration in OpenAI's x-ratelimit-reset-* format: "20ms", "1.5s", "1m0.5s". */
const durationPattern = /^(\d+ms|\d+(\.\d+)?s|\d+m\d+(\.\d+)?s)$/;

interface Answer {
  status: number;
  headers: Record<string, string>;
  json: any;
}

describe.runIf(enabled)('three gateway processes sharing Redis and Postgres', () => {
  let pg: PrivatePostgres;
  let db: SqlClient;
  let redis: Redis;
  let agent: Agent;
  const sims: SimProcess[] = [];
  /** Three replicas with one config, in front of the two quick engines. */
  let trio: GatewayProcess[] = [];
  /** One slot on the slow engine, 300 ms queue deadline. */
  let queueGateway: GatewayProcess;
  /** One slot on the slow engine, the default queue deadline. */
  let fairGateway: GatewayProcess;
  const allGateways = () => [...trio, queueGateway, fairGateway].filter((g): g is GatewayProcess => g !== undefined);

  beforeAll(async () => {
    redis = new Redis(REDIS_URL!, { maxRetriesPerRequest: 1 });
    agent = new Agent({ keepAliveTimeout: 2_000 });
    const [server, quick0, quick1, slow] = await Promise.all([
      startPrivatePostgres(),
      spawnSim(['--time-scale', '50', '--seed', '0', '--output-len-mean', '4', '--output-len-max', '8']),
      spawnSim(['--time-scale', '50', '--seed', '1', '--output-len-mean', '4', '--output-len-max', '8']),
      spawnSim(['--time-scale', '50', '--slow-ms-per-token', String(slowMsPerToken)]),
    ]);
    pg = server;
    sims.push(quick0, quick1, slow);
    for (const s of sims) killOnExit(s.child);
    db = await openDatabase({ url: pg.url, maxConnections: 2 });

    const engine = (id: string, sim: SimProcess) => ({ id, url: sim.url, kind: 'vllm', models: [testModel], labels: { pool: 'default' } });
    const config = (engines: object[], extra: Record<string, unknown> = {}) => ({
      server: { port: 0 },
      engines,
      database: { url: pg.url },
      redis: { url: REDIS_URL },
      // Long enough that within a test only the invalidation bus can make a replica forget a key.
      auth: { keyCacheTtlMs: 60_000 },
      health: { intervalMs: 1_000, timeoutMs: 1_000 },
      scrape: { intervalMs: 500 },
      // redisTimeoutMs: a limit check slower than this is treated as Redis being down and (fail-open, the default)
      // answered from the replica's own counters, which lets more through than the shared limit. The default 250 ms
      // is reached when Redis is busy with other suites' scripts; these tests are about the shared counters.
      limits: { redisKeyPrefix: rateLimitPrefix, defaultMaxTokens, redisTimeoutMs: 2_000 },
      usage: { streamKey: `${prefix}usage`, claimIdleMs: 1_000, flushIntervalMs: 50 },
      kvcache: { redisKeyPrefix: `${prefix}kv:` },
      log: { level: 'warn' },
      ...extra,
    });
    const env = { DATABASE_URL: pg.url, REDIS_URL: REDIS_URL!, SWITCHYARD_ADMIN_KEY: adminKey };
    const quick = [engine('quick-0', quick0), engine('quick-1', quick1)];
    const started = await Promise.allSettled([
      ...[0, 1, 2].map(() => spawnGateway({ config: config(quick), env })),
      spawnGateway({ config: config([engine('slow', slow)], { queue: { maxWaitMs: 300, saturation: { maxInFlight: 1 } } }), env }),
      spawnGateway({ config: config([engine('slow', slow)], { queue: { saturation: { maxInFlight: 1 } } }), env }),
    ]);
    const up = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    trio = up.slice(0, 3);
    if (up.length === started.length) [queueGateway, fairGateway] = [up[3]!, up[4]!];
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled(allGateways().map((g) => g.stop()));
    await Promise.allSettled(sims.map((s) => s.kill()));
    await agent?.close();
    await db?.close().catch(() => {});
    if (redis !== undefined) {
      const keys: string[] = [];
      for await (const batch of redis.scanStream({ match: `${prefix}*`, count: 1000 })) keys.push(...(batch as string[]));
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    }
    await pg?.destroy();
  }, 60_000);

  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      for (const [i, g] of allGateways().entries()) console.error(`--- gateway ${i} (${g.url}) output:\n${g.output()}`);
    });
  });

  // ---------------------------------------------------------------------------------------------- helpers

  async function call(url: string, opts: { method?: 'GET' | 'POST' | 'PUT' | 'PATCH'; key?: string; body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Answer> {
    const res = await request(url, {
      dispatcher: agent,
      method: opts.method ?? (opts.body === undefined ? 'GET' : 'POST'),
      headers: {
        ...(opts.key !== undefined ? { authorization: `Bearer ${opts.key}` } : {}),
        ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...opts.headers,
      },
      body: opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body),
      signal: opts.signal,
    });
    const text = await res.body.text();
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    let json: any;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.statusCode, headers, json };
  }

  const admin = async (method: 'GET' | 'POST' | 'PUT' | 'PATCH', path: string, body: unknown = {}) => {
    const a = await call(`${trio[0]!.url}${path}`, { method, key: adminKey, body: method === 'GET' ? undefined : body });
    expect(a.status, JSON.stringify(a.json)).toBeLessThan(300);
    return a.json;
  };

  /** A tenant (optionally with tenant-wide limits) and one API key of it, made through gateway 0's admin API. */
  async function tenantWithKey(name: string, limits: { rpm?: number; tpm?: number } = {}): Promise<{ id: string; name: string; key: string; keyId: string }> {
    const tenant = await admin('POST', '/admin/tenants', { name: `${name}-${run}`, ...limits });
    const key = await admin('POST', `/admin/tenants/${tenant.name}/keys`);
    return { id: tenant.id, name: tenant.name, key: key.key, keyId: key.id };
  }

  /** Chat body; without maxTokens the gateway reserves defaultMaxTokens and the quick engines answer in 1-8 tokens. */
  const chatBody = (maxTokens?: number) => JSON.stringify({ model: testModel, messages: [{ role: 'user', content: prompt }], ...(maxTokens === undefined ? {} : { max_tokens: maxTokens }) });

  const chat = (gateway: GatewayProcess, key: string, body: string, headers: Record<string, string> = {}, signal?: AbortSignal) =>
    call(`${gateway.url}/v1/chat/completions`, { key, body, headers, signal });

  /**
   * Resolves the key and loads the tenant's policy on each gateway (GET /v1/models authenticates and reads the
   * policy), without counting a request against any limit.
   */
  async function warm(key: string, gateways: GatewayProcess[]): Promise<void> {
    for (const g of gateways) expect((await call(`${g.url}/v1/models`, { key })).status).toBe(200);
  }

  /**
   * Limits count in one-minute windows (Redis clock); the estimate of a window that just rolled over lets a little
   * more through as the previous one slides out. Tests that expect exact counts start with `ms` left in the window.
   */
  async function windowRoom(ms: number): Promise<void> {
    const [seconds, micros] = await redis.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const left = 60_000 - (now % 60_000);
    if (left < ms) await sleep(left + 50);
  }

  /** The tokens counted in the current window of a tenant-wide limit. */
  const countedTokens = async (tenantId: string) => Number((await redis.hget(`${rateLimitPrefix}{${tenantId}}:tenant`, 't')) ?? 0);

  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

  /** The usage object of an SSE answer (the client asked for it with stream_options.include_usage). */
  function streamUsage(text: string): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
    const events = text.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
    const withUsage = events.filter((e) => e.usage != null);
    expect(withUsage).toHaveLength(1);
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    return withUsage[0].usage;
  }

  /** Limit checks each gateway answered from its local counters because Redis was slow or down (should stay 0). */
  const fallbacks = async (gateways: GatewayProcess[]) =>
    Promise.all(gateways.map(async (g) => metricValue((await call(`${g.url}/metrics`)).json as string, 'switchyard_rate_limit_fallbacks_total')));

  /** A gateway's requests in flight on its engines and waiting in its fair queue, from its /metrics. */
  async function gauges(g: GatewayProcess): Promise<{ inFlight: number; queued: number }> {
    const text = (await call(`${g.url}/metrics`)).json as string;
    return { inFlight: metricValue(text, 'switchyard_in_flight_requests'), queued: metricValue(text, 'switchyard_queue_length') };
  }

  // ------------------------------------------------------------------------------------------------ tests

  it('RPM 60 across three gateways: of 200 concurrent requests exactly 60 pass, 140 get 429 with rate-limit headers', async () => {
    const t = await tenantWithKey('rpm', { rpm: 60 });
    await warm(t.key, trio);
    await windowRoom(5_000);

    const body = chatBody(4);
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => chat(trio[i % 3]!, t.key, body)));

    const ok = answers.filter((a) => a.status === 200);
    const limited = answers.filter((a) => a.status === 429);
    expect({ ok: ok.length, limited: limited.length, fallbacks: await fallbacks(trio) }).toEqual({ ok: 60, limited: 140, fallbacks: [0, 0, 0] });
    // One atomic counter: the 60 admitted requests saw 59, 58, ..., 0 remaining, each exactly once.
    expect(ok.map((a) => Number(a.headers['x-ratelimit-remaining-requests'])).sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    for (const a of ok) {
      expect(a.headers['x-ratelimit-limit-requests']).toBe('60');
      expect(a.json.usage.completion_tokens).toBe(4);
    }
    for (const a of limited) {
      expect(a.headers['x-ratelimit-limit-requests']).toBe('60');
      expect(a.headers['x-ratelimit-remaining-requests']).toBe('0');
      expect(a.headers['x-ratelimit-reset-requests']).toMatch(durationPattern);
      expect(a.headers['retry-after']).toMatch(/^[1-9]\d*$/);
      expect(a.json).toEqual({ error: { message: expect.stringContaining('Rate limit reached'), type: 'requests', param: null, code: 'rate_limit_exceeded' } });
    }
  });

  it('TPM across three gateways: tokens used stay within the limit, and reservations are corrected to the real usage', async () => {
    // (a) Many concurrent requests with max_tokens: each reserves its prompt estimate (body bytes / 4) plus max_tokens.
    const tpm = 2_000;
    const a = await tenantWithKey('tpm', { tpm });
    await warm(a.key, trio);
    await windowRoom(6_000);
    const body = chatBody(40);
    const reservation = Math.ceil(Buffer.byteLength(body) / 4) + 40;
    const answers = await Promise.all(Array.from({ length: 90 }, (_, i) => chat(trio[i % 3]!, a.key, body)));
    const ok = answers.filter((x) => x.status === 200);
    const limited = answers.filter((x) => x.status === 429);
    expect(ok.length + limited.length).toBe(answers.length);
    const used = sum(ok.map((x) => x.json.usage.total_tokens as number));
    expect(await fallbacks(trio)).toEqual([0, 0, 0]);
    expect(used).toBeLessThanOrEqual(tpm + reservation);
    // Not stricter than it should be either: at least as many as fit by their reservations.
    expect(ok.length).toBeGreaterThanOrEqual(Math.floor(tpm / reservation));
    expect(limited.length).toBeGreaterThan(0);
    for (const x of limited) {
      expect(x.headers['x-ratelimit-limit-tokens']).toBe(String(tpm));
      expect(x.headers['x-ratelimit-remaining-tokens']).toMatch(/^\d+$/);
      expect(x.headers['x-ratelimit-reset-tokens']).toMatch(durationPattern);
      expect(x.headers['retry-after']).toMatch(/^[1-9]\d*$/);
      expect(x.json).toEqual({ error: { message: expect.stringContaining('Rate limit reached'), type: 'tokens', param: null, code: 'rate_limit_exceeded' } });
    }
    // Once every answer is in, the shared counter holds exactly the tokens used: every reservation was corrected.
    await vi.waitFor(async () => expect(await countedTokens(a.id)).toBe(used), { timeout: 3_000, interval: 50 });

    // (b) Requests without max_tokens reserve defaultMaxTokens (1000) but use a few tokens: with TPM 2500 a third
    // request fits only because the first two were corrected to their real usage; six in a row all pass.
    const tpmB = 2_500;
    const b = await tenantWithKey('tpm-corrected', { tpm: tpmB });
    await warm(b.key, trio);
    // Every other one streams: its usage comes from the stream's last event.
    const bodies = [chatBody(), JSON.stringify({ model: testModel, messages: [{ role: 'user', content: prompt }], stream: true, stream_options: { include_usage: true } })];
    const reservedFor = (body: string) => Math.ceil(Buffer.byteLength(body) / 4) + defaultMaxTokens;
    expect(3 * Math.min(...bodies.map(reservedFor))).toBeGreaterThan(tpmB);
    let counted = 0;
    for (let i = 0; i < 6; i++) {
      const body = bodies[i % 2]!;
      const reserved = reservedFor(body);
      const x = await chat(trio[i % 3]!, b.key, body);
      expect(x.status, JSON.stringify(x.json)).toBe(200);
      // Admission counted the whole reservation on top of the corrected usage so far...
      expect(Number(x.headers['x-ratelimit-remaining-tokens'])).toBe(tpmB - counted - reserved);
      const real = (i % 2 === 0 ? x.json.usage.total_tokens : streamUsage(x.json as string).total_tokens) as number;
      expect(real).toBeLessThan(reserved / 10);
      counted += real;
      // ...and the answer's real usage replaced it (the correction is sent as the answer goes out; wait for it).
      await vi.waitFor(async () => expect(await countedTokens(b.id)).toBe(counted), { timeout: 2_000, interval: 20 });
    }
  });

  it('a key revoked through one gateway is refused by the other two within a second (pub/sub, not cache expiry)', async () => {
    const t = await tenantWithKey('revoke');
    const body = chatBody(2);
    // Each replica has the key cached now, for auth.keyCacheTtlMs = 60 s.
    for (const g of trio) expect((await chat(g, t.key, body)).status).toBe(200);

    const revokedAt = performance.now();
    const revoked = await admin('POST', `/admin/keys/${t.keyId}/revoke`);
    expect(revoked.revokedAt).toEqual(expect.any(String));
    // The replica that revoked it forgets it before answering the admin call.
    expect((await chat(trio[0]!, t.key, body)).status).toBe(401);

    const until401 = async (g: GatewayProcess): Promise<{ ms: number; last: Answer }> => {
      for (;;) {
        const last = await chat(g, t.key, body);
        const ms = performance.now() - revokedAt;
        if (last.status === 401 || ms > 3_000) return { ms, last };
        await sleep(50);
      }
    };
    const [b, c] = await Promise.all([until401(trio[1]!), until401(trio[2]!)]);
    for (const r of [b, c]) {
      expect(r.last.status).toBe(401);
      expect(r.last.json).toEqual({ error: { message: 'invalid API key', type: 'authentication_error', param: null, code: 'invalid_api_key' } });
      expect(r.ms).toBeLessThan(1_000);
    }
  });

  it('Postgres stopped and restarted under load: exactly one usage row per request once it is back', async () => {
    const t = await tenantWithKey('pg-restart');
    await warm(t.key, trio);
    const ids = `pgr-${run}`;
    const n = 150;
    const body = chatBody(4);
    let down = false;
    let sentWhileDown = 0;
    let backlogAtRestart = 0;
    const outage = (async () => {
      await sleep(400);
      down = true;
      await pg.stop();
      await sleep(2_000);
      // The rows recorded meanwhile wait in the Redis stream.
      backlogAtRestart = await redis.xlen(`${prefix}usage`);
      await pg.start();
      down = false;
    })();
    const sends: Promise<Answer>[] = [];
    for (let i = 0; i < n; i++) {
      if (down) sentWhileDown++;
      sends.push(chat(trio[i % 3]!, t.key, body, { 'x-request-id': `${ids}-${i}` }));
      await sleep(20);
    }
    await outage;
    const answers = await Promise.all(sends);
    expect(sentWhileDown).toBeGreaterThan(20);
    expect(backlogAtRestart).toBeGreaterThan(20);
    // Keys and policies were cached and usage goes through Redis: the outage costs the clients nothing.
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    answers.forEach((a, i) => expect(a.headers['x-request-id']).toBe(`${ids}-${i}`));

    let rows: { request_id: string }[] = [];
    await vi.waitFor(
      async () => {
        rows = (await db.query<{ request_id: string }>('SELECT request_id FROM usage WHERE tenant_id = $1', [t.id])).rows;
        expect(rows.length).toBeGreaterThanOrEqual(n);
      },
      { timeout: 30_000, interval: 200 },
    );
    expect(rows.length).toBe(n);
    // The gateway stores `${x-request-id}.${uuid}`: each request id exactly once.
    const seen = new Map<string, number>();
    for (const r of rows) {
      const m = new RegExp(`^(${ids}-\\d+)\\.[0-9a-f-]{36}$`).exec(r.request_id);
      expect(m, r.request_id).not.toBeNull();
      seen.set(m![1]!, (seen.get(m![1]!) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual(Array.from({ length: n }, (_, i) => `${ids}-${i}`).sort());
    expect([...seen.values()].every((c) => c === 1)).toBe(true);
  }, 60_000);

  it('a request queued past its deadline gets 429 queue_timeout while the one holding the slot still succeeds', async () => {
    const t = await tenantWithKey('queue');
    await warm(t.key, [queueGateway]);
    const longTokens = 120; // 120 x 10 ms on the slow engine: holds the gateway's only slot for over a second
    const longStarted = performance.now();
    const long = chat(queueGateway, t.key, chatBody(longTokens));
    await vi.waitFor(async () => expect(await gauges(queueGateway)).toEqual({ inFlight: 1, queued: 0 }), { timeout: 2_000, interval: 20 });

    const queuedAt = performance.now();
    const queued = await chat(queueGateway, t.key, chatBody(2));
    const waited = performance.now() - queuedAt;
    expect(queued.status).toBe(429);
    expect(queued.json).toEqual({ error: { message: expect.stringContaining('saturated'), type: 'rate_limit_exceeded', param: null, code: 'queue_timeout' } });
    expect(queued.headers['retry-after']).toBe('1');
    expect(waited).toBeGreaterThanOrEqual(280);
    expect(waited).toBeLessThan(1_000);

    const done = await long;
    expect(done.status).toBe(200);
    expect(done.json.usage.completion_tokens).toBe(longTokens);
    expect(performance.now() - longStarted).toBeGreaterThan(longTokens * slowMsPerToken);
    // The slot is free again.
    expect((await chat(queueGateway, t.key, chatBody(2))).status).toBe(200);
  });

  it('fair queue: a tenant with 10x the requests in flight gets no more tokens than an equal-weight one', async () => {
    // The virtual token counters live in each replica (router/fair-queue.ts), so one gateway shows the property;
    // several would each be fair over their own queue. One slot on the slow engine (8 tokens x 10 ms per request)
    // keeps both tenants backlogged: A with 20 loops, B with 2 (one running or waiting, the other waiting).
    const a = await tenantWithKey('fair-a');
    const b = await tenantWithKey('fair-b');
    await warm(a.key, [fairGateway]);
    await warm(b.key, [fairGateway]);
    const body = chatBody(8);
    const warmupMs = 1_500;
    const windowMs = 7_000;
    const started = performance.now();
    const end = started + windowMs;
    const stop = new AbortController();
    setMaxListeners(50, stop.signal);
    const served: { tenant: 'a' | 'b'; at: number; tokens: number }[] = [];
    const unexpected: string[] = [];
    const loop = async (tenant: 'a' | 'b', key: string) => {
      for (let i = 0; i < 200 && performance.now() < end; i++) {
        try {
          const x = await chat(fairGateway, key, body, {}, stop.signal);
          if (x.status === 200) served.push({ tenant, at: performance.now(), tokens: x.json.usage.total_tokens });
          else unexpected.push(`${x.status} ${JSON.stringify(x.json)}`);
        } catch (err) {
          if (!stop.signal.aborted) throw err;
        }
      }
    };
    const loops = [...Array.from({ length: 20 }, () => loop('a', a.key)), ...Array.from({ length: 2 }, () => loop('b', b.key))];
    // Meanwhile: the engine never holds more than the one slot, and a backlog waits in the queue throughout.
    const samples: { inFlight: number; queued: number }[] = [];
    await sleep(warmupMs);
    while (performance.now() < end - 250) {
      samples.push(await gauges(fairGateway));
      await sleep(200);
    }
    await sleep(Math.max(0, end - performance.now()));
    // The requests still queued are abandoned (the client closes; the gateway drops them from the queue).
    stop.abort();
    await Promise.all(loops);

    expect(unexpected).toEqual([]);
    expect(samples.length).toBeGreaterThan(10);
    expect(Math.max(...samples.map((x) => x.inFlight))).toBe(1);
    expect(Math.min(...samples.map((x) => x.queued))).toBeGreaterThanOrEqual(10);
    const window = served.filter((s) => s.at >= started + warmupMs && s.at <= end);
    const tokens = (tenant: 'a' | 'b') => sum(window.filter((s) => s.tenant === tenant).map((s) => s.tokens));
    const [ta, tb] = [tokens('a'), tokens('b')];
    const counts = { a: window.filter((s) => s.tenant === 'a').length, b: window.filter((s) => s.tenant === 'b').length };
    // First come, first served would give B about 2 of every 22 requests.
    expect(counts.b, JSON.stringify(counts)).toBeGreaterThanOrEqual(15);
    expect(Math.min(ta, tb) / Math.max(ta, tb), JSON.stringify({ ta, tb, ...counts })).toBeGreaterThanOrEqual(0.9);
  }, 30_000);
});
