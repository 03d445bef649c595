import { DEFAULT_ENGINE_PERF } from '../core/engine.js';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import type { FastifyReply } from 'fastify';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { parseCommandArgs } from '../cli/args.js';
import { loadConfig } from '../core/config.js';
import { ControlPlaneStore, generateApiKey } from '../core/db/control-plane-store.js';
import { migrate } from '../core/db/migrate.js';
import { fallbackRateLimiter } from '../core/state/fallback-rate-limiter.js';
import { memoryRateLimiter } from '../core/state/memory-rate-limiter.js';
import { redisRateLimiter } from '../core/state/redis-rate-limiter.js';
import { admit, type AdmissionDeps } from '../router/admission.js';
import { createGatewayMetrics } from '../router/metrics.js';
import { tenantKeyResolver } from '../router/tenant-auth.js';
import { tenantPolicyCache } from '../router/tenant-policy.js';
import { cpuSeconds, pinSelf, startService, type Service } from './child.js';
import { openBenchDatabase, seedTenant } from './limits-setup.js';

/**
 * What API-key auth and tenant limits add to a request, with the limits in Redis. Two views:
 *
 * - micro: the admission path alone, in this process, against the real Redis and a real control-plane database:
 *   resolve the key (SHA-256 + LRU hit), read the tenant's policy (cache hit), admit() (3 rules, one Lua reserve in
 *   Redis), settle the reservation (one Lua call). Latency per request and this process' CPU per request, with 1
 *   and with 32 requests in flight.
 * - macro: the live gateway end to end, three times in front of the same zero-latency simulated engine (see
 *   bench/limits-gateway.ts): `plain` (a config key, no database, no limits), `limits` (a database key with 3 quotas,
 *   the Redis limiter, a usage event per request into the Redis stream) and `limits+writer` (the same, and the
 *   gateway also drains the stream into its database, as a lone gateway does by default). autocannon drives each
 *   in turn, with 1 connection (the latency a request pays, no queueing) and with 32 (CPU per request under load);
 *   limits - plain is what auth + limits cost, limits+writer - limits what the in-process usage writer costs.
 *
 * Redis at --redis, else REDIS_URL, else redis://127.0.0.1:6379 (required: the bench exits 1 without it). The
 * database is PGlite in memory, or a fresh schema on DATABASE_URL when set. Every Redis key the bench makes is
 * under one fresh prefix and deleted at the end. Redis CPU and command counts come from INFO, so they are the
 * server's: anything else using that Redis meanwhile counts too (the bench warns when it sees other clients).
 */

const usage = `npm run bench:limits -- [--iterations 20000] [--duration 3] [--runs 3] [--connections 32] [--warmup 1] [--max-seconds 30] [--redis URL] [--only micro|macro] [--unpinned]

  --iterations N   micro: admissions per measurement (1 in flight, then --connections in flight)
  --max-seconds S  micro: a measurement stops after S seconds even if N is not reached
  --duration S     macro: seconds per autocannon run
  --runs N         macro: measured runs per gateway and load (min / median / max over them)
  --connections C  concurrent requests (micro) and client connections (macro) of the loaded measurements
  --warmup S       macro: seconds of unmeasured load per gateway and load before the runs
  --redis URL      Redis for the limits (default env REDIS_URL, else redis://127.0.0.1:6379)
  --only WHAT      run only the micro or only the macro part
  --unpinned       macro: do not pin processes to CPUs (default: gateways on the last CPU, the rest on the others)`;

const flags = parseCommandArgs(
  'limits-bench',
  usage,
  {
    iterations: { type: 'string' },
    'max-seconds': { type: 'string' },
    duration: { type: 'string' },
    runs: { type: 'string' },
    connections: { type: 'string' },
    warmup: { type: 'string' },
    redis: { type: 'string' },
    only: { type: 'string' },
    unpinned: { type: 'boolean', default: false },
  },
  process.argv.slice(2),
);

function fail(message: string, code = 2): never {
  console.error(`limits-bench: ${message}`);
  process.exit(code);
}

function intFlag(name: string, raw: string | undefined, dflt: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} ${JSON.stringify(raw)} must be an integer from ${min} to ${max}\n\n${usage}`);
  return n;
}

const redisUrl = flags.redis ?? (process.env.REDIS_URL || 'redis://127.0.0.1:6379');
if (!/^rediss?:\/\//.test(redisUrl)) fail(`--redis ${JSON.stringify(redisUrl)} is not a redis:// or rediss:// URL`);
if (flags.only !== undefined && flags.only !== 'micro' && flags.only !== 'macro') fail(`--only must be micro or macro\n\n${usage}`);

const settings = {
  iterations: intFlag('iterations', flags.iterations, 20_000, 1, 10_000_000),
  maxSeconds: intFlag('max-seconds', flags['max-seconds'], 30, 1, 600),
  durationS: intFlag('duration', flags.duration, 3, 1, 120),
  runs: intFlag('runs', flags.runs, 3, 1, 50),
  connections: intFlag('connections', flags.connections, 32, 1, 1024),
  warmupS: intFlag('warmup', flags.warmup, 1, 0, 60),
  micro: flags.only !== 'macro',
  macro: flags.only !== 'micro',
  pinned: !flags.unpinned && cpus().length >= 2,
  redisUrl,
  databaseUrl: process.env.DATABASE_URL || undefined,
};

/** The goal for what auth + limits add to a request's latency, p50. */
const GOAL_P50_MS = 0.3;
const model = 'bench-model';
const maxTokens = 16;
const requestBody = { model, messages: [{ role: 'user', content: 'Tell the bench something short.' }], max_tokens: maxTokens };
const requestJson = JSON.stringify(requestBody);
/** Every Redis key of this run (limit counters, usage stream) is under this prefix, deleted at the end. */
const redisPrefix = `switchyard-bench:limits:${randomBytes(4).toString('hex')}:`;

// --------------------------------------------------------------------------------------------- helpers

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
/** Nearest-rank percentile of sorted values. */
const pct = (sorted: ArrayLike<number>, q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
const spread = (xs: readonly number[], digits = 0) => [Math.min(...xs), median(xs), Math.max(...xs)].map((x) => x.toFixed(digits)).join(' / ');

function printTable(rows: readonly (readonly string[])[], leftColumns: number): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((cell, i) => (i < leftColumns ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
}

/** A client that fails at once instead of retrying, for the reachability check, INFO and clean-up. */
async function connectRedis(url: string): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 2_000, commandTimeout: 5_000, retryStrategy: () => null });
  let lastError: Error | undefined;
  redis.on('error', (err: Error) => {
    lastError = err;
  });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    const why = lastError?.message ?? (err as Error).message;
    console.error(`limits-bench: Redis is unreachable at ${url} (${why}). Start Redis, or pass --redis URL / set REDIS_URL.`);
    process.exit(1);
  }
  return redis;
}

interface RedisCounters {
  /** Seconds of CPU (user + system, all threads) the Redis server has used. */
  readonly cpu: number;
  /** Script calls (EVALSHA, EVAL): one per reserve() and per settle() that changes something. */
  readonly lua: number;
  /** Other commands sent by clients (usage stream: XADD, XREADGROUP, XACK, ...), INFO (the bench's own) left out. */
  readonly other: number;
}

/**
 * Commands the rate-limit scripts run inside Redis: commandstats counts them too, but they are no round trips.
 * Nothing else in these benches uses them (the prefix index, which would, is off).
 */
const scriptInnerCommands = new Set(['time', 'hmget', 'hset', 'hincrby', 'pexpire']);

/** Server-wide counters: anything else using this Redis meanwhile counts too. */
async function redisCounters(redis: Redis): Promise<RedisCounters> {
  const info = String(await redis.call('INFO', 'cpu', 'commandstats'));
  const num = (name: string) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0);
  let lua = 0;
  let other = 0;
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const command = m[1]!;
    if (command === 'evalsha' || command === 'eval') lua += Number(m[2]);
    else if (command !== 'info' && !scriptInnerCommands.has(command)) other += Number(m[2]);
  }
  return { cpu: num('used_cpu_user') + num('used_cpu_sys'), lua, other };
}

/** Per request: Redis CPU µs, Lua calls, other commands. */
function redisPerRequest(before: RedisCounters, after: RedisCounters, requests: number) {
  return {
    redisCpuUsPerReq: ((after.cpu - before.cpu) * 1e6) / requests,
    luaPerReq: (after.lua - before.lua) / requests,
    otherCmdsPerReq: (after.other - before.other) / requests,
  };
}

/** Deletes every key under the bench's prefix. */
async function cleanRedis(redis: Redis): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

// ----------------------------------------------------------------------------------------------- micro

interface MicroResult {
  readonly inFlight: number;
  readonly requests: number;
  readonly seconds: number;
  readonly reqPerSec: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly cpuUsPerReq: number;
  readonly redisCpuUsPerReq: number;
  readonly luaPerReq: number;
  readonly otherCmdsPerReq: number;
  /** p50 of each stage (meaningful with 1 in flight). */
  readonly stagesP50Ms: { readonly resolve: number; readonly admit: number; readonly settle: number };
}

async function micro(admin: Redis): Promise<{ results: MicroResult[]; database: string; scopes: readonly string[] }> {
  // The gateway's defaults for everything the admission path reads (cache TTLs and sizes, limits).
  const config = loadConfig({ env: {} });
  const database = await openBenchDatabase(settings.databaseUrl);
  // Built as router/shared-state.ts builds it, except fail-closed: should Redis fail, the bench stops rather than
  // measuring the in-process fallback.
  const redis = new Redis(settings.redisUrl, { lazyConnect: true, enableOfflineQueue: false, commandTimeout: config.limits.redisTimeoutMs, maxRetriesPerRequest: 0 });
  redis.on('error', () => {});
  try {
    await redis.connect();
    await migrate(database.db);
    const store = new ControlPlaneStore(database.db);
    const key = generateApiKey();
    const seeded = await seedTenant(store, { model, key });
    const cache = { ttlMs: config.auth.keyCacheTtlMs, maxEntries: config.auth.keyCacheMaxEntries };
    const keys = tenantKeyResolver(store, cache);
    const limiter = fallbackRateLimiter({ shared: redisRateLimiter({ redis, keyPrefix: `${redisPrefix}micro:` }), local: memoryRateLimiter(), failMode: 'closed' });
    const deps: AdmissionDeps = {
      policies: tenantPolicyCache(store, cache),
      limiter,
      limits: config.limits,
      metrics: createGatewayMetrics(new Registry(), { engines: () => [], queueLength: () => new Map<number, number>(), adaptersResident: () => new Map<string, number>(), perf: () => DEFAULT_ENGINE_PERF }),
    };
    // admit() only sets the x-ratelimit-* headers on the reply.
    const reply = {
      header() {
        return this;
      },
    } as unknown as FastifyReply;
    const bodyBytes = Buffer.byteLength(requestJson);

    let stages: Float64Array[] = [];
    const one = async (i: number): Promise<void> => {
      const t0 = performance.now();
      const principal = await keys.resolve(key);
      if (principal === undefined) throw new Error('micro: the bench key did not resolve');
      const t1 = performance.now();
      const admission = await admit(principal, model, requestBody, bodyBytes, true, reply, deps);
      const reservation = admission.reservation;
      if (reservation === undefined || reservation.scopes.length !== seeded.scopes.length) throw new Error('micro: admit() made no reservation over the 3 quotas');
      const t2 = performance.now();
      // The real usage differs from the reservation (prompt estimate + max_tokens), so settle has work to do.
      await limiter.settle(reservation, admission.promptEstimate + maxTokens - 4);
      const t3 = performance.now();
      stages[0]![i] = t1 - t0;
      stages[1]![i] = t2 - t1;
      stages[2]![i] = t3 - t2;
    };

    const measure = async (n: number, inFlight: number, capMs: number): Promise<MicroResult> => {
      const latency = new Float64Array(n);
      stages = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
      let next = 0;
      const redisBefore = await redisCounters(admin);
      const cpuBefore = process.cpuUsage();
      const start = performance.now();
      const deadline = start + capMs;
      const worker = async () => {
        while (next < n && performance.now() < deadline) {
          const i = next++;
          const t = performance.now();
          await one(i);
          latency[i] = performance.now() - t;
        }
      };
      await Promise.all(Array.from({ length: inFlight }, worker));
      const seconds = (performance.now() - start) / 1000;
      const cpu = process.cpuUsage(cpuBefore);
      const redisAfter = await redisCounters(admin);
      const count = next;
      const sorted = (xs: Float64Array) => xs.subarray(0, count).sort();
      const lat = sorted(latency);
      const [resolve, admitted, settled] = stages.map(sorted) as [Float64Array, Float64Array, Float64Array];
      return {
        inFlight,
        requests: count,
        seconds,
        reqPerSec: count / seconds,
        p50Ms: pct(lat, 0.5),
        p90Ms: pct(lat, 0.9),
        p99Ms: pct(lat, 0.99),
        maxMs: lat[count - 1]!,
        cpuUsPerReq: (cpu.user + cpu.system) / count,
        ...redisPerRequest(redisBefore, redisAfter, count),
        stagesP50Ms: { resolve: pct(resolve, 0.5), admit: pct(admitted, 0.5), settle: pct(settled, 0.5) },
      };
    };

    // Warm-up: the first resolve and policy read go to the database, the first script call loads the scripts, and
    // the JIT settles.
    await measure(Math.min(2_000, settings.iterations), 1, 10_000);
    await measure(Math.min(2_000, settings.iterations), settings.connections, 10_000);
    const results: MicroResult[] = [];
    for (const inFlight of [1, settings.connections]) {
      const r = await measure(settings.iterations, inFlight, settings.maxSeconds * 1000);
      process.stderr.write(`micro, ${inFlight} in flight: ${r.requests} admissions in ${r.seconds.toFixed(1)} s\n`);
      results.push(r);
    }
    return { results, database: database.label, scopes: seeded.scopes };
  } finally {
    redis.disconnect();
    await database.dispose();
  }
}

function printMicro(m: { results: MicroResult[]; database: string; scopes: readonly string[] }): void {
  console.log(`\nMicro: the admission path in process: resolve key (SHA-256 + LRU hit) -> tenant policy (cache hit) -> admit()`);
  console.log(`(${m.scopes.length} rules: ${m.scopes.map((s) => s.replace(/^key:.*/, 'key')).join(', ')}; one Lua reserve) -> settle (one Lua call)`);
  console.log(`Redis ${settings.redisUrl}, database ${m.database}, this process unpinned\n`);
  const rows = [['in flight', 'admissions', 'adm/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'CPU µs/adm', 'Redis CPU µs/adm', 'Lua calls/adm', 'other cmds/adm']];
  for (const r of m.results) {
    rows.push([
      String(r.inFlight),
      String(r.requests),
      r.reqPerSec.toFixed(0),
      r.p50Ms.toFixed(3),
      r.p90Ms.toFixed(3),
      r.p99Ms.toFixed(3),
      r.maxMs.toFixed(3),
      r.cpuUsPerReq.toFixed(1),
      r.redisCpuUsPerReq.toFixed(1),
      r.luaPerReq.toFixed(2),
      r.otherCmdsPerReq.toFixed(2),
    ]);
  }
  printTable(rows, 1);
  const seq = m.results[0]!;
  const s = seq.stagesP50Ms;
  console.log(`\n1 in flight, p50 by stage: resolve key ${s.resolve.toFixed(3)} ms, admit ${s.admit.toFixed(3)} ms, settle ${s.settle.toFixed(3)} ms`);
  console.log(`micro p50 (1 in flight) ${seq.p50Ms.toFixed(3)} ms: ${seq.p50Ms < GOAL_P50_MS ? 'within' : 'OVER'} the ${GOAL_P50_MS} ms goal`);
}

// ----------------------------------------------------------------------------------------------- macro

const gatewayNames = ['plain', 'limits', 'limits+writer'] as const;
type GatewayName = (typeof gatewayNames)[number];

interface Target {
  readonly name: GatewayName;
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly service: Service;
}

interface MacroRun {
  readonly requests: number;
  readonly reqPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly gatewayCpuUsPerReq: number;
  readonly simCpuUsPerReq: number;
  readonly redisCpuUsPerReq: number;
  readonly luaPerReq: number;
  readonly otherCmdsPerReq: number;
}

const answered = (body: string) => body.includes('"choices"');

/** One request before any load: a misconfigured gateway fails with its own message, and the limits are checked to apply. */
async function probe(t: Target): Promise<void> {
  const res = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', headers: t.headers, body: requestJson, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (!res.ok || !answered(text)) throw new Error(`${t.name}: probe got ${res.status}: ${text.slice(0, 500)}`);
  const limited = res.headers.get('x-ratelimit-limit-requests') !== null;
  if (limited !== (t.name !== 'plain')) throw new Error(`${t.name}: the probe's answer ${limited ? 'has' : 'lacks'} x-ratelimit-* headers`);
}

async function load(t: Target, connections: number, durationS: number, sim: Service, admin: Redis): Promise<MacroRun> {
  const redisBefore = await redisCounters(admin);
  const gatewayBefore = cpuSeconds(t.service.pid);
  const simBefore = cpuSeconds(sim.pid);
  // autocannon's own percentiles are in whole ms; the response event has the exact time of each request.
  const latencies: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `${t.url}/v1/chat/completions`,
        method: 'POST',
        headers: t.headers,
        body: requestJson,
        connections,
        duration: durationS,
        timeout: 10,
        verifyBody: (body) => answered(String(body)),
      },
      (err: unknown, res: autocannon.Result) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res)),
    );
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
    });
  });
  const gatewayCpu = cpuSeconds(t.service.pid) - gatewayBefore;
  const simCpu = cpuSeconds(sim.pid) - simBefore;
  const redisAfter = await redisCounters(admin);
  const requests = result.requests.total;
  const bad = result.non2xx + result.errors + result.timeouts + result.mismatches;
  if (bad > 0 || requests === 0) {
    throw new Error(
      `${t.name}, ${connections} connections: ${requests} requests, non-2xx ${result.non2xx} ${JSON.stringify(result.statusCodeStats ?? {})}, ` +
        `errors ${result.errors}, timeouts ${result.timeouts}, broken bodies ${result.mismatches}`,
    );
  }
  const sorted = Float64Array.from(latencies).sort();
  return {
    requests,
    reqPerSec: requests / result.duration,
    p50Ms: pct(sorted, 0.5),
    p99Ms: pct(sorted, 0.99),
    gatewayCpuUsPerReq: (gatewayCpu * 1e6) / requests,
    simCpuUsPerReq: (simCpu * 1e6) / requests,
    ...redisPerRequest(redisBefore, redisAfter, requests),
  };
}

interface MacroOutcome {
  readonly loads: readonly number[];
  readonly runs: Record<string, MacroRun[]>;
  readonly configs: Record<GatewayName, unknown>;
  readonly pinning: string;
}

async function macro(admin: Redis, outDir: string, stamp: string): Promise<MacroOutcome> {
  const dist = fileURLToPath(new URL('..', import.meta.url));
  const cli = join(dist, 'cli', 'main.js');
  // As in proxy-bench: the gateways (one loaded at a time) get the last CPU, load generator and sim share the rest.
  // Redis is not ours to pin: it runs wherever the scheduler puts it.
  const last = cpus().length - 1;
  const gatewayCpus = settings.pinned ? String(last) : undefined;
  const otherCpus = settings.pinned ? (last === 1 ? '0' : `0-${last - 1}`) : undefined;
  if (otherCpus !== undefined) pinSelf(otherCpus);
  const pinning = settings.pinned ? `gateways on CPU ${gatewayCpus}, load generator and sim on ${otherCpus}, Redis unpinned` : 'unpinned';
  const services: Service[] = [];
  const start = async (...args: Parameters<typeof startService>) => {
    const s = await startService(...args);
    services.push(s);
    return s;
  };
  try {
    const sim = await start('sim', cli, ['sim', '--port', '0', '--model', model, '--zero-latency'], /^switchyard sim listening on (\S+)/, { cpus: otherCpus });
    // Identical but for auth, database, Redis and limits. No prefix index: with Redis set it would live in Redis,
    // and its cost would count as the limits'.
    const common = {
      server: { host: '127.0.0.1', port: 0 },
      engines: [{ id: 'sim-0', url: sim.url, kind: 'vllm', models: [model], labels: { pool: 'default' } }],
      routing: { policy: 'least-request' },
      kvcache: { enabled: false },
      log: { level: 'warn' },
    };
    const limited = (name: GatewayName, writer: boolean) => ({
      ...common,
      redis: { url: settings.redisUrl },
      ...(settings.databaseUrl === undefined ? {} : { database: { url: settings.databaseUrl } }),
      // Fail-closed: a Redis failure shows as errors (and stops the bench) instead of a quiet in-process fallback.
      limits: { failMode: 'closed', redisKeyPrefix: `${redisPrefix}${name}:rl:` },
      // Each gateway its own stream. Without the writer the events stay in it (a writer elsewhere would drain
      // them); the bench deletes it at the end.
      usage: { streamKey: `${redisPrefix}${name}:usage`, writer },
    });
    const configs: Record<GatewayName, unknown> = {
      plain: { ...common, auth: { keys: [{ principal: 'bench', env: 'BENCH_KEY' }] } },
      limits: limited('limits', false),
      'limits+writer': limited('limits+writer', true),
    };
    const targets: Target[] = [];
    for (const name of gatewayNames) {
      // JSON is YAML; kept in .bench/ next to the results so a run can be reproduced by hand.
      const configPath = join(outDir, `limits-${stamp}-${name}.yaml`);
      writeFileSync(configPath, JSON.stringify(configs[name], null, 2));
      const key = generateApiKey();
      const mode = name === 'plain' ? 'plain' : 'limits';
      const service = await start(name, join(dist, 'bench', 'limits-gateway.js'), ['--config', configPath, '--mode', mode, '--model', model], /^limits gateway listening on (\S+)/, {
        cpus: gatewayCpus,
        env: { BENCH_KEY: key },
      });
      targets.push({ name, url: service.url, headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, service });
    }

    const loads = [...new Set([1, settings.connections])];
    const runs: Record<string, MacroRun[]> = {};
    for (const connections of loads) {
      for (const t of targets) {
        await probe(t);
        if (settings.warmupS > 0) await load(t, connections, settings.warmupS, sim, admin);
      }
      // The gateways take turns run by run, so a slow drift of the machine touches both alike.
      for (let i = 0; i < settings.runs; i++) {
        for (const t of targets) {
          const run = await load(t, connections, settings.durationS, sim, admin);
          (runs[`${connections}/${t.name}`] ??= []).push(run);
          process.stderr.write(`macro ${t.name}, ${connections} connections, run ${i + 1}/${settings.runs}: ${run.reqPerSec.toFixed(0)} req/s\n`);
        }
      }
    }
    return { loads, runs, configs, pinning };
  } finally {
    // Gateways first, so neither sees its engine vanish and complains.
    for (const s of [...services].reverse()) await s.stop();
  }
}

function printMacro(m: MacroOutcome): void {
  console.log(`\nMacro: the gateway end to end, POST /v1/chat/completions (non-stream, max_tokens ${maxTokens}) to a zero-latency sim`);
  console.log('  plain          config key, no database, no limits, no usage events');
  console.log('  limits         database key, 3 quotas, Redis limiter (Lua reserve + settle), a usage event per request (XADD)');
  console.log('  limits+writer  the same, and the gateway also runs the usage-stream writer into its database (the default)');
  console.log(`${settings.runs} runs x ${settings.durationS} s per gateway and load, closed loop, ${m.pinning}\n`);
  const rows = [['conns', 'gateway', 'req/s min / med / max', 'p50 ms', 'p99 ms', 'gateway CPU µs/req min / med / max', 'Redis CPU µs/req', 'Lua calls/req', 'other cmds/req', 'sim CPU µs/req']];
  for (const c of m.loads) {
    for (const name of gatewayNames) {
      const rs = m.runs[`${c}/${name}`]!;
      rows.push([
        String(c),
        name,
        spread(rs.map((r) => r.reqPerSec)),
        median(rs.map((r) => r.p50Ms)).toFixed(3),
        median(rs.map((r) => r.p99Ms)).toFixed(3),
        spread(rs.map((r) => r.gatewayCpuUsPerReq)),
        median(rs.map((r) => r.redisCpuUsPerReq)).toFixed(1),
        median(rs.map((r) => r.luaPerReq)).toFixed(2),
        median(rs.map((r) => r.otherCmdsPerReq)).toFixed(2),
        median(rs.map((r) => r.simCpuUsPerReq)).toFixed(0),
      ]);
    }
  }
  printTable(rows, 2);
  const sign = (x: number, digits: number) => `${x >= 0 ? '+' : ''}${x.toFixed(digits)}`;
  const differences = (label: string, from: GatewayName, to: GatewayName, goal: boolean) => {
    console.log(`\n${label} (${to} - ${from}, medians over the runs):`);
    for (const c of m.loads) {
      const med = (name: GatewayName, f: (r: MacroRun) => number) => median(m.runs[`${c}/${name}`]!.map(f));
      const diff = (f: (r: MacroRun) => number) => med(to, f) - med(from, f);
      const dp50 = diff((r) => r.p50Ms);
      const note = c !== 1 ? ' (includes queueing behind the other connections)' : goal ? ` (${dp50 < GOAL_P50_MS ? 'within' : 'OVER'} the ${GOAL_P50_MS} ms goal)` : '';
      console.log(
        `  ${String(c).padStart(4)} connection${c === 1 ? ' ' : 's'}: p50 ${sign(dp50, 3)} ms${note}; ` +
          `gateway CPU ${sign(diff((r) => r.gatewayCpuUsPerReq), 0)} µs/req; Redis CPU ${sign(diff((r) => r.redisCpuUsPerReq), 0)} µs/req`,
      );
    }
  };
  differences('auth + limits + usage event add', 'plain', 'limits', true);
  differences('the in-process usage writer adds', 'limits', 'limits+writer', false);
}

// ------------------------------------------------------------------------------------------------ main

/** Things that make the figures say more about the machine than about the gateway, said before they are taken. */
async function warnings(admin: Redis): Promise<string[]> {
  const out: string[] = [];
  const clients = String(await admin.call('CLIENT', 'LIST')).split('\n').filter((line) => line.trim() !== '').length - 1;
  if (clients > 0) out.push(`${clients} other client(s) connected to Redis: its CPU and command counts include their work`);
  const load = loadavg()[0]!;
  if (load > 0.5) out.push(`load average ${load.toFixed(2)} before the bench: other work on this machine skews the figures`);
  for (const w of out) process.stderr.write(`limits-bench: warning: ${w}\n`);
  return out;
}

async function main(): Promise<void> {
  const admin = await connectRedis(settings.redisUrl);
  const warned = await warnings(admin);
  const outDir = join(process.cwd(), '.bench');
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  // Everything below is bounded on its own; this is the backstop should something hang.
  const microBudgetS = settings.micro ? 2 * settings.maxSeconds + 60 : 0;
  const macroBudgetS = settings.macro ? 2 * gatewayNames.length * (settings.runs * settings.durationS + settings.warmupS + 15) + 60 : 0;
  const watchdog = setTimeout(() => {
    console.error(`limits-bench: still running after ${microBudgetS + macroBudgetS} s; giving up`);
    process.exit(1);
  }, (microBudgetS + macroBudgetS) * 1000);
  watchdog.unref();
  try {
    const m = settings.micro ? await micro(admin) : undefined;
    const g = settings.macro ? await macro(admin, outDir, stamp) : undefined;

    console.log(`\n${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}; Redis figures are server-wide (INFO)`);
    for (const w of warned) console.log(`warning: ${w}`);
    if (m !== undefined) printMicro(m);
    if (g !== undefined) printMacro(g);

    const outFile = join(outDir, `limits-${stamp}.json`);
    const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version };
    writeFileSync(
      outFile,
      JSON.stringify({ date: new Date().toISOString(), machine, settings, warnings: warned, goalP50Ms: GOAL_P50_MS, micro: m, macro: g }, null, 2),
    );
    console.log(`\nresults: ${outFile}`);
  } finally {
    await cleanRedis(admin).catch((err: unknown) => console.error(`limits-bench: could not delete the bench's Redis keys: ${String(err)}`));
    admin.disconnect();
  }
}

process.once('SIGINT', () => process.exit(130));
main().catch((err: unknown) => {
  console.error(`limits-bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
