import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { engineKey, engineSetKey, parseEngineRecord } from '../../core/discovery/engine-record.js';
import { type RunningSidecar, startSidecar } from '../../engine-sidecar/sidecar.js';
import { startSim } from '../../engine-sim/server.js';
import type { SidecarStatus } from '../../engine-sidecar/sidecar.js';
import { type KvEventSubscription, subscribeKvEvents } from '../../kvcache/events/subscriber.js';
import { LocalPrefixIndex } from '../../kvcache/index/local.js';
import { killOnExit } from '../helpers/gateway-process.js';
import { authHeaders, chatBody, metricValue, startGateway, testModel } from '../helpers/cluster.js';

// The sidecar supervising a real simulated engine process (the compiled CLI), on 127.0.0.1: in this process through
// startSidecar, and as its own process (dist/cli/sidecar.js) for the signal tests. Needs `npm run build`.

const mainJs = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const sidecarJs = fileURLToPath(new URL('../../dist/cli/sidecar.js', import.meta.url));
const REDIS_URL = process.env.REDIS_URL;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function getJson<T>(url: string): Promise<T> {
  const res = await request(url, { signal: AbortSignal.timeout(2_000) });
  return (await res.body.json()) as T;
}

async function getText(url: string): Promise<{ status: number; text: string }> {
  const res = await request(url, { signal: AbortSignal.timeout(2_000) });
  return { status: res.statusCode, text: await res.body.text() };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits (bounded) until the sidecar's status satisfies `check`, returning that status. */
async function statusWhen(url: string, check: (s: SidecarStatus) => boolean, timeoutMs = 15_000): Promise<SidecarStatus> {
  return vi.waitFor(
    async () => {
      const s = await getJson<SidecarStatus>(`${url}/sidecar/status`);
      if (!check(s)) throw new Error(`status not reached yet: ${JSON.stringify(s)}`);
      return s;
    },
    { timeout: timeoutMs, interval: 50 },
  );
}

function simArgs(port: number, extra: string[] = []): string[] {
  return [mainJs, 'sim', '--model', testModel, '--port', String(port), ...extra];
}

interface SidecarProcess {
  readonly url: string;
  readonly child: ChildProcess;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  output(): string;
}

/** `node dist/cli/sidecar.js FLAGS -- node dist/cli/main.js sim ...`, once it prints its URL. */
async function spawnSidecar(flags: string[], engine: string[], env: NodeJS.ProcessEnv = process.env): Promise<SidecarProcess> {
  const child = spawn(process.execPath, [sidecarJs, ...flags, '--', process.execPath, ...engine], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(child);
  const lines: string[] = [];
  const keep = (line: string) => {
    lines.push(line);
    if (lines.length > 200) lines.shift();
  };
  createInterface({ input: child.stderr! }).on('line', keep);
  const stdout = createInterface({ input: child.stdout! });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  const output = () => lines.join('\n');
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sidecar did not start within 15 s:\n${output()}`)), 15_000);
    void exit.then(({ code }) => reject(new Error(`sidecar exited (${code}) before listening:\n${output()}`)));
    stdout.on('line', (line) => {
      keep(line);
      const m = /^switchyard sidecar listening on (http:\/\/\S+)/.exec(line);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
  return { url, child, exit, output };
}

/** Sends SIGKILL to a leftover engine (a test failed, or its sidecar was SIGKILLed). */
function reap(pid: number | undefined): void {
  if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
}

describe('engine sidecar in process, supervising a simulated engine', () => {
  let sidecar: RunningSidecar;
  let enginePort: number;
  let index: LocalPrefixIndex;
  let events: KvEventSubscription;

  beforeAll(async () => {
    enginePort = await freePort();
    const kvPort = await freePort();
    sidecar = await startSidecar({
      engine: 'sim',
      enginePort,
      command: process.execPath,
      args: simArgs(enginePort, ['--time-scale', '50', '--kv-events-endpoint', `tcp://127.0.0.1:${kvPort}`]),
      engineStdio: 'ignore',
      host: '127.0.0.1',
      port: 0,
      id: 'sim-under-sidecar',
      advertiseHost: '127.0.0.1',
      kvEvents: `tcp://127.0.0.1:${kvPort}`,
      kvEventsPublish: 'tcp://127.0.0.1:*',
      drainTimeoutMs: 5_000,
      supervisor: { healthIntervalMs: 100, restartBackoffMs: 100, stopTimeoutMs: 5_000 },
      log: () => {},
    });
    index = new LocalPrefixIndex({ maxEntries: 100_000 });
    events = subscribeKvEvents({ endpoint: sidecar.kvEventsEndpoint!, engineId: sidecar.id, index, onError: () => {} });
    expect(await sidecar.supervisor.waitHealthy(15_000)).toBe(true);
  });

  afterAll(async () => {
    await events?.close();
    const pid = sidecar?.supervisor.pid;
    await sidecar?.drain();
    reap(pid);
  });

  it('reports the engine healthy and serves normalised metrics followed by the engine text', async () => {
    expect((await getText(`${sidecar.url}/readyz`)).status).toBe(200);
    const status = await statusWhen(sidecar.url, (s) => s.models.length > 0);
    expect(status).toMatchObject({ state: 'running', kind: 'sim', models: [testModel], engine: { state: 'healthy', restarts: 0 } });
    expect(alive(status.engine.pid!)).toBe(true);

    const res = await request(`http://127.0.0.1:${enginePort}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content: 'count the tokens of this prompt' }], max_tokens: 5 }),
    });
    expect(res.statusCode).toBe(200);
    const usage = ((await res.body.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;

    const { status: code, text } = await getText(`${sidecar.url}/metrics`);
    expect(code).toBe(200);
    expect(metricValue(text, 'switchyard_engine_up')).toBe(1);
    expect(metricValue(text, 'switchyard_engine_running')).toBe(0);
    expect(metricValue(text, 'switchyard_engine_generation_tokens_total')).toBeGreaterThanOrEqual(usage.completion_tokens);
    expect(metricValue(text, 'switchyard_engine_prompt_tokens_total')).toBeGreaterThanOrEqual(usage.prompt_tokens);
    expect(metricValue(text, 'switchyard_engine_time_to_first_token_seconds_count')).toBeGreaterThanOrEqual(1);
    // The engine's own names follow, unchanged.
    expect(metricValue(text, 'vllm:generation_tokens_total')).toBe(metricValue(text, 'switchyard_engine_generation_tokens_total'));
  });

  it("translates the adapter API to the engine's: the engine lists what was loaded through the sidecar", async () => {
    const post = (path: string, body: object) =>
      request(`${sidecar.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const load = await post('/v1/lora_adapter/load', { lora_name: 'sql-lora', lora_path: '/adapters/sql' });
    expect(load.statusCode).toBe(200);
    expect(await load.body.json()).toMatchObject({ lora_name: 'sql-lora', status: 'loaded' });
    const listed = await getJson<{ data: { id: string; parent: string | null }[] }>(`http://127.0.0.1:${enginePort}/v1/models`);
    expect(listed.data).toContainEqual(expect.objectContaining({ id: 'sql-lora', parent: testModel }));

    const missing = await post('/v1/lora_adapter/unload', { lora_name: 'nope' });
    expect(missing.statusCode).toBe(404);
    expect(((await missing.body.json()) as { error: { code: string } }).error.code).toBe('adapter_not_loaded');
    const unload = await post('/v1/lora_adapter/unload', { lora_name: 'sql-lora' });
    expect(unload.statusCode).toBe(200);
    await unload.body.dump();
    const after = await getJson<{ data: { id: string }[] }>(`http://127.0.0.1:${enginePort}/v1/models`);
    expect(after.data.map((m) => m.id)).toEqual([testModel]);
  });

  it("relays the engine's KV events to subscribers of the sidecar", async () => {
    // ZMQ drops what is published before the subscriber's connection is up: send until a batch arrives.
    let n = 0;
    await vi.waitFor(
      async () => {
        const res = await request(`http://127.0.0.1:${enginePort}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: testModel, prompt: `relay test ${n++} `.repeat(40), max_tokens: 1 }),
        });
        await res.body.dump();
        expect(events.stats.batches).toBeGreaterThan(0);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(index.stats().entries).toBeGreaterThan(0);
    const status = await getJson<SidecarStatus>(`${sidecar.url}/sidecar/status`);
    expect(status.kvEvents!.forwarded).toBeGreaterThan(0);
  });

  it('restarts the engine after it is killed and reports it healthy again; subscribers forget its cache', async () => {
    const before = await getJson<SidecarStatus>(`${sidecar.url}/sidecar/status`);
    const pid = before.engine.pid!;
    process.kill(pid, 'SIGKILL');
    const after = await statusWhen(sidecar.url, (s) => s.engine.state === 'healthy' && s.engine.pid !== pid && s.engine.restarts === 1);
    expect(after.engine.lastExit).toMatchObject({ pid, signal: 'SIGKILL' });
    expect(alive(after.engine.pid!)).toBe(true);
    expect((await getText(`${sidecar.url}/readyz`)).status).toBe(200);
    expect(metricValue((await getText(`${sidecar.url}/metrics`)).text, 'switchyard_engine_restarts_total')).toBe(1);
    // The relay told subscribers the dead engine's cache is gone.
    await vi.waitFor(() => expect(index.stats().entries).toBe(0), { timeout: 5_000, interval: 20 });
    // And the new engine answers.
    const res = await request(`http://127.0.0.1:${enginePort}/v1/models`);
    expect(res.statusCode).toBe(200);
    await res.body.dump();
  });
});

describe('engine sidecar attached to an engine it does not run', () => {
  it('watches, serves metrics and drains without starting or stopping the engine', async () => {
    const sim = await startSim({ model: testModel, timeScale: 50 });
    const sidecar = await startSidecar({
      engine: 'sim',
      enginePort: sim.port,
      host: '127.0.0.1',
      port: 0,
      supervisor: { healthIntervalMs: 50 },
      log: () => {},
    });
    try {
      expect(await sidecar.supervisor.waitHealthy(10_000)).toBe(true);
      const status = await statusWhen(sidecar.url, (s) => s.models.length > 0);
      expect(status.engine).toMatchObject({ attached: true, state: 'healthy', restarts: 0 });
      expect(status.engine.pid).toBeUndefined();
      expect(metricValue((await getText(`${sidecar.url}/metrics`)).text, 'switchyard_engine_up')).toBe(1);
      expect(await sidecar.drain()).toMatchObject({ idle: true });
      expect(await sidecar.done).toBe(0);
      // The engine is someone else's: still serving.
      const res = await request(`${sim.url}/health`);
      expect(res.statusCode).toBe(200);
      await res.body.dump();
    } finally {
      await sidecar.drain();
      await sim.close();
    }
  });
});

describe('engine sidecar whose engine keeps dying', () => {
  it('gives up after the bounded restarts and ends with exit code 1, its API closed', async () => {
    const lines: string[] = [];
    const sidecar = await startSidecar({
      engine: 'vllm',
      enginePort: await freePort(),
      command: process.execPath,
      args: ['-e', 'process.exit(4)'],
      engineStdio: 'ignore',
      host: '127.0.0.1',
      port: 0,
      supervisor: { healthIntervalMs: 50, restartBackoffMs: 20, maxRestarts: 2 },
      log: (line) => lines.push(line),
    });
    const code = await Promise.race([sidecar.done, sleep(10_000).then(() => 'timeout')]);
    expect(code).toBe(1);
    expect(sidecar.status()).toMatchObject({ state: 'failed', engine: { state: 'failed', restarts: 2, lastExit: { code: 4 } } });
    expect(lines.filter((l) => /exited with code 4/.test(l))).toHaveLength(3);
    // The sidecar closed its API with the rest.
    await expect(getText(`${sidecar.url}/healthz`)).rejects.toThrow();
  });
});

describe('switchyard sidecar as a process', () => {
  it('on SIGTERM lets a long stream to the engine finish completely, then stops the engine and exits 0', async () => {
    const enginePort = await freePort();
    // About 50 ms a token at time scale 1: a 40-token answer streams for 2 s.
    const sc = await spawnSidecar(
      ['--engine', 'sim', '--engine-port', String(enginePort), '--port', '0', '--host', '127.0.0.1', '--health-interval-ms', '100', '--drain-timeout-ms', '15000'],
      simArgs(enginePort, ['--decode-base-ms', '50']),
    );
    let enginePid: number | undefined;
    try {
      enginePid = (await statusWhen(sc.url, (s) => s.engine.state === 'healthy')).engine.pid;
      const res = await request(`http://127.0.0.1:${enginePort}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content: 'tell me a long story' }], max_tokens: 40, stream: true, stream_options: { include_usage: true } }),
        bodyTimeout: 20_000,
      });
      expect(res.statusCode).toBe(200);
      let text = '';
      let signalled = false;
      for await (const chunk of res.body) {
        text += (chunk as Buffer).toString();
        if (!signalled && text.includes('"content"')) {
          signalled = true;
          sc.child.kill('SIGTERM');
        }
      }
      const streamEnded = Date.now();
      expect(signalled).toBe(true);
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const usage = text
        .split('\n')
        .filter((l) => l.startsWith('data: {'))
        .map((l) => JSON.parse(l.slice(6)) as { usage?: { completion_tokens: number } | null })
        .find((c) => c.usage != null)?.usage;
      expect(usage?.completion_tokens).toBe(40);
      expect(text).toContain('"finish_reason":"length"');

      const exit = await Promise.race([sc.exit, sleep(20_000).then(() => undefined)]);
      expect(exit, sc.output()).toMatchObject({ code: 0 });
      expect(exit!.at).toBeGreaterThanOrEqual(streamEnded);
      expect(alive(enginePid!)).toBe(false);
      expect(sc.output()).toMatch(/engine idle after \d+ ms/);
    } finally {
      sc.child.kill('SIGKILL');
      reap(enginePid);
    }
  });

  it('refuses bad flags with exit 2', () => {
    const env = { ...process.env };
    delete env.REDIS_URL;
    const run = (args: string[]) => spawnSync(process.execPath, [sidecarJs, ...args], { encoding: 'utf8', env, timeout: 10_000 });
    const noEngine = run(['--engine-port', '1', '--', 'true']);
    expect(noEngine.status).toBe(2);
    expect(noEngine.stderr).toContain('--engine KIND is required');
    const badKind = run(['--engine', 'tgi', '--engine-port', '1', '--', 'true']);
    expect(badKind.status).toBe(2);
    const emptyCommand = run(['--engine', 'vllm', '--engine-port', '1', '--']);
    expect(emptyCommand.status).toBe(2);
    expect(emptyCommand.stderr).toContain('nothing after --');
    const noRedis = run(['--engine', 'vllm', '--engine-port', '1', '--register', '--', 'true']);
    expect(noRedis.status).toBe(2);
    expect(noRedis.stderr).toContain('REDIS_URL');
  });

  describe.runIf(REDIS_URL)('registration in Redis', () => {
    let redis: Redis;
    beforeAll(() => {
      redis = new Redis(REDIS_URL!, { maxRetriesPerRequest: 1, commandTimeout: 2_000 });
    });
    afterAll(async () => {
      await redis?.quit();
    });

    /** A gateway that discovers engines from the registry under `prefix`, and where its next chat request goes. */
    async function discoveringGateway(prefix: string) {
      const gateway = await startGateway([], {
        redis: { url: REDIS_URL },
        discovery: { registry: { enabled: true, prefix, intervalMs: 100 } },
        limits: { redisKeyPrefix: `${prefix}rl:` },
        adapters: { redisKeyPrefix: `${prefix}adapters:` },
        kvcache: { redisKeyPrefix: `${prefix}kv:` },
      });
      const url = await gateway.listen();
      const routedTo = async () => {
        const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: authHeaders(), body: chatBody() });
        await res.body.dump();
        return { status: res.statusCode, pod: res.headers['x-switchyard-pod'] };
      };
      return { gateway, routedTo };
    }

    async function registered(ttlMs: number) {
      const enginePort = await freePort();
      const prefix = `switchyard-test:${randomUUID()}:`;
      const id = `sidecar-${enginePort}`;
      const sc = await spawnSidecar(
        [
          '--engine', 'sim', '--engine-port', String(enginePort), '--port', '0', '--host', '127.0.0.1', '--health-interval-ms', '100',
          '--register', '--registry-prefix', prefix, '--id', id, '--advertise-host', '127.0.0.1', '--ttl-ms', String(ttlMs),
          '--label', 'pool=p1', '--kv-capacity-tokens', '12345',
        ],
        simArgs(enginePort, ['--time-scale', '50']),
        { ...process.env, REDIS_URL },
      );
      const key = engineKey(prefix, id);
      return { sc, prefix, id, key, enginePort };
    }

    it('writes the engine record with a TTL once the engine is healthy, and removes it on drain; a running router follows', async () => {
      const ttlMs = 2_000;
      const { sc, prefix, id, key, enginePort } = await registered(ttlMs);
      let enginePid: number | undefined;
      const { gateway, routedTo } = await discoveringGateway(prefix);
      try {
        // The router routes to the engine as soon as the sidecar registered it.
        await vi.waitFor(async () => expect(await routedTo()).toEqual({ status: 200, pod: id }), { timeout: 15_000, interval: 100 });
        await vi.waitFor(async () => expect(await redis.exists(key)).toBe(1), { timeout: 15_000, interval: 50 });
        const pttl = await redis.pttl(key);
        expect(pttl).toBeGreaterThan(0);
        expect(pttl).toBeLessThanOrEqual(ttlMs);
        expect(await redis.smembers(engineSetKey(prefix))).toEqual([id]);
        const sidecarPort = new URL(sc.url).port;
        expect(parseEngineRecord((await redis.get(key))!)).toEqual({
          id,
          url: `http://127.0.0.1:${enginePort}`,
          kind: 'vllm',
          models: [testModel],
          labels: { pool: 'p1' },
          kvCapacityTokens: 12345,
          kvEventsEndpoint: undefined,
          sidecarUrl: `http://127.0.0.1:${sidecarPort}`,
          heartbeatAt: expect.any(Number),
        });
        const status = await getJson<SidecarStatus>(`${sc.url}/sidecar/status`);
        expect(status.registered).toBe(true);
        enginePid = status.engine.pid;
        // Heartbeats keep it past its TTL.
        await sleep(ttlMs + 500);
        expect(await redis.exists(key)).toBe(1);

        sc.child.kill('SIGTERM');
        const exit = await Promise.race([sc.exit, sleep(15_000).then(() => undefined)]);
        expect(exit, sc.output()).toMatchObject({ code: 0 });
        expect(await redis.exists(key)).toBe(0);
        expect(await redis.smembers(engineSetKey(prefix))).toEqual([]);
        // And forgets it once it deregistered.
        await vi.waitFor(async () => expect((await routedTo()).status).toBe(404), { timeout: 5_000, interval: 100 });
      } finally {
        sc.child.kill('SIGKILL');
        reap(enginePid);
        await gateway.close();
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      }
    });

    it('restarts a killed engine, and the router that discovered it routes to it again', async () => {
      const { sc, prefix, id } = await registered(10_000);
      let enginePid: number | undefined;
      const { gateway, routedTo } = await discoveringGateway(prefix);
      try {
        await vi.waitFor(async () => expect(await routedTo()).toEqual({ status: 200, pod: id }), { timeout: 15_000, interval: 100 });
        enginePid = (await getJson<SidecarStatus>(`${sc.url}/sidecar/status`)).engine.pid;
        process.kill(enginePid!, 'SIGKILL');
        const restarted = await statusWhen(sc.url, (s) => s.engine.restarts >= 1 && s.engine.state === 'healthy' && s.engine.pid !== enginePid);
        enginePid = restarted.engine.pid;
        // Same id and URL: the router's health checks bring it back without any registry change.
        await vi.waitFor(async () => expect(await routedTo()).toEqual({ status: 200, pod: id }), { timeout: 15_000, interval: 100 });
      } finally {
        sc.child.kill('SIGKILL');
        reap(enginePid);
        await gateway.close();
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      }
    });

    it('lets the record expire within its TTL when the sidecar is SIGKILLed', async () => {
      const ttlMs = 1_500;
      const { sc, key, prefix } = await registered(ttlMs);
      let enginePid: number | undefined;
      try {
        await vi.waitFor(async () => expect(await redis.exists(key)).toBe(1), { timeout: 15_000, interval: 50 });
        enginePid = (await getJson<SidecarStatus>(`${sc.url}/sidecar/status`)).engine.pid;
        sc.child.kill('SIGKILL');
        const killedAt = Date.now();
        await sc.exit;
        await vi.waitFor(async () => expect(await redis.exists(key)).toBe(0), { timeout: ttlMs + 1_000, interval: 50 });
        expect(Date.now() - killedAt).toBeLessThanOrEqual(ttlMs + 1_000);
      } finally {
        sc.child.kill('SIGKILL');
        // The engine runs in its own process group and outlives a SIGKILLed sidecar, as it would in a pod whose
        // sidecar container alone died.
        reap(enginePid);
        // The id stays in the set until a router's read finds its record expired; none runs here.
        await redis.del(engineSetKey(prefix));
      }
    });
  });
});
