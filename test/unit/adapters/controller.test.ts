import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AdaptersController, type AdaptersControllerOptions, type ControllerEngine, type RoundReport } from '../../../adapters-controller/controller.js';
import { EngineAdapters, type AdapterEngineRef } from '../../../adapters-controller/engine-adapters.js';
import type { RegisteredAdapter } from '../../../adapters-controller/placement.js';
import type { AdapterStateStore } from '../../../core/state/adapter-state.js';
import { memoryAdapterState } from '../../../core/state/memory-adapter-state.js';
import { redisAdapterState } from '../../../core/state/redis-adapter-state.js';
import { startSim, type RunningSim } from '../../../engine-sim/server.js';

const REDIS_URL = process.env.REDIS_URL;
const MODEL = 'test-model';
const silent = { info: () => {}, warn: () => {}, error: () => {} };

/** What the controller sent to the engines, per operation and outcome. */
class CountingAdapters extends EngineAdapters {
  readonly loads: { engine: string; adapter: string; ok: boolean }[] = [];
  readonly unloads: { engine: string; adapter: string; ok: boolean }[] = [];

  override async load(engine: AdapterEngineRef, name: string, source: string): Promise<void> {
    try {
      await super.load(engine, name, source);
      this.loads.push({ engine: engine.id, adapter: name, ok: true });
    } catch (err) {
      this.loads.push({ engine: engine.id, adapter: name, ok: false });
      throw err;
    }
  }

  override async unload(engine: AdapterEngineRef, name: string): Promise<void> {
    try {
      await super.unload(engine, name);
      this.unloads.push({ engine: engine.id, adapter: name, ok: true });
    } catch (err) {
      this.unloads.push({ engine: engine.id, adapter: name, ok: false });
      throw err;
    }
  }
}

interface Fleet {
  sims: RunningSim[];
  engines: ControllerEngine[];
  /** Engine id -> adapters the engine itself lists. */
  resident(): Promise<Map<string, string[]>>;
  /** Stops engine i and starts a fresh one (no adapters) on the same port. */
  restart(i: number): Promise<void>;
  close(): Promise<void>;
}

async function startFleet(n: number, sim: { maxLoras?: number }[] = []): Promise<Fleet> {
  const opts = (i: number) => ({ model: MODEL, maxLoras: sim[i]?.maxLoras ?? 4, loraLoadMs: 200, timeScale: 20, seed: i });
  const sims: RunningSim[] = [];
  for (let i = 0; i < n; i++) sims.push(await startSim(opts(i)));
  const engines: ControllerEngine[] = sims.map((s, i) => ({ id: `sim-${i}`, url: s.url, kind: 'vllm', models: [MODEL], healthy: true }));
  const reader = new EngineAdapters();
  return {
    sims,
    engines,
    async resident() {
      const out = new Map<string, string[]>();
      for (const e of engines) out.set(e.id, (await reader.list(e)).map((a) => a.name).sort());
      return out;
    },
    async restart(i) {
      const port = sims[i]!.port;
      await sims[i]!.close();
      sims[i] = await startSim({ ...opts(i), port });
    },
    async close() {
      await reader.close();
      await Promise.all(sims.map((s) => s.close()));
    },
  };
}

const registry: RegisteredAdapter[] = Array.from({ length: 10 }, (_, i) => ({ name: `lora-${i}`, baseModel: MODEL, source: `/adapters/lora-${i}` }));
// Skewed: with 60 requests/min per replica, lora-0 wants 4 replicas, lora-1 3, lora-2 2, lora-3..6 one, lora-7..9 none.
const SKEW: Record<string, number> = { 'lora-0': 240, 'lora-1': 150, 'lora-2': 90, 'lora-3': 20, 'lora-4': 20, 'lora-5': 20, 'lora-6': 20 };
const WANTED: Record<string, number> = { 'lora-0': 4, 'lora-1': 3, 'lora-2': 2, 'lora-3': 1, 'lora-4': 1, 'lora-5': 1, 'lora-6': 1 };
const WANTED_TOTAL = Object.values(WANTED).reduce((a, b) => a + b, 0);

async function recordDemand(store: AdapterStateStore, counts: Record<string, number>): Promise<void> {
  for (const [name, n] of Object.entries(counts)) await Promise.all(Array.from({ length: n }, () => store.recordDemand(name)));
}

function replicaCounts(resident: Map<string, string[]>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const names of resident.values()) for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
}

async function rounds(controller: AdaptersController, n: number): Promise<RoundReport[]> {
  const out: RoundReport[] = [];
  for (let i = 0; i < n; i++) out.push(await controller.reconcileNow());
  return out;
}

/** The same integration suite over each store. */
function controllerSuite(kind: string, openStore: () => Promise<{ store: AdapterStateStore; close(): Promise<void> }>): void {
  describe(`AdaptersController over real simulated engines (${kind} store)`, () => {
    let fleet: Fleet;
    let store: AdapterStateStore;
    let closeStore: () => Promise<void>;
    const controllers: AdaptersController[] = [];
    const make = (client: EngineAdapters, extra: { store?: AdapterStateStore; options?: AdaptersControllerOptions; hooks?: ConstructorParameters<typeof AdaptersController>[0]['hooks'] } = {}) => {
      const c = new AdaptersController({
        store: extra.store ?? store,
        engines: () => fleet.engines,
        adapters: async () => registry,
        client,
        logger: silent,
        options: { intervalMs: 50, leaseTtlMs: 5_000, ...extra.options },
        hooks: extra.hooks,
      });
      controllers.push(c);
      return c;
    };

    beforeEach(async () => {
      fleet = await startFleet(4);
      ({ store, close: closeStore } = await openStore());
      await recordDemand(store, SKEW);
    });
    afterEach(async () => {
      await Promise.all(controllers.splice(0).map((c) => c.stop()));
      await closeStore();
      await fleet.close();
    });

    it('converges in a round: every demanded adapter resident, at most 4 per engine, hot ones on several engines, then holds still', async () => {
      const client = new CountingAdapters();
      const c = make(client);
      const reports = await rounds(c, 5);
      const resident = await fleet.resident();
      for (const names of resident.values()) expect(names.length).toBeLessThanOrEqual(4);
      expect(replicaCounts(resident)).toEqual(WANTED);
      // Hot adapters (lora-0..2) spread: their first replicas on three different engines, and their 9 replicas
      // over the 4 engines as evenly as can be (3, 2, 2, 2).
      expect(new Set(reports[0]!.loaded.slice(0, 3).map((l) => l.engine)).size).toBe(3);
      const hotPerEngine = [...resident.values()].map((names) => names.filter((n) => ['lora-0', 'lora-1', 'lora-2'].includes(n)).length);
      expect(Math.max(...hotPerEngine) - Math.min(...hotPerEngine)).toBeLessThanOrEqual(1);
      expect(reports[0]!.leader).toBe(true);
      expect(reports[0]!.loaded).toHaveLength(WANTED_TOTAL);
      expect(reports.slice(1).every((r) => r.loaded.length === 0 && r.unloaded.length === 0 && r.failed.length === 0)).toBe(true);
      expect(client.loads.filter((l) => l.ok)).toHaveLength(WANTED_TOTAL);
      expect(client.loads.filter((l) => !l.ok)).toHaveLength(0);
      expect(client.unloads).toHaveLength(0);
      // The store says what the engines say.
      const placements = await store.placements();
      expect(placements.every((p) => p.state === 'resident')).toBe(true);
      expect(placements.map((p) => `${p.engine}/${p.adapter}`).sort()).toEqual([...resident].flatMap(([e, names]) => names.map((n) => `${e}/${n}`)).sort());
      console.info(`[adapters ${kind}] converge: 5 rounds, ${client.loads.length} loads, ${client.unloads.length} unloads; layout ${JSON.stringify(Object.fromEntries(resident))}`);
    });

    it('a new controller after a stop recovers from the engines and loads nothing again, with the store kept or lost', async () => {
      const first = new CountingAdapters();
      await rounds(make(first), 2);
      await controllers[0]!.stop();
      const before = await fleet.resident();

      const second = new CountingAdapters();
      const again = await rounds(make(second), 3);
      expect(again.every((r) => r.leader)).toBe(true);
      expect(second.loads).toHaveLength(0);
      expect(second.unloads).toHaveLength(0);
      await controllers[1]!.stop();

      // A controller whose store is empty (the embedded store of a restarted process) rebuilds it from the engines.
      const { store: empty, close } = await openStore();
      try {
        await recordDemand(empty, SKEW);
        const third = new CountingAdapters();
        const reports = await rounds(make(third, { store: empty }), 3);
        expect(reports[0]!.synced).toBe(WANTED_TOTAL);
        expect(third.loads).toHaveLength(0);
        expect(third.unloads).toHaveLength(0);
        expect((await empty.placements()).length).toBe(WANTED_TOTAL);
        expect(await fleet.resident()).toEqual(before);
        console.info(`[adapters ${kind}] restart: first ${first.loads.length} loads; after restart ${second.loads.length} loads (store kept), ${third.loads.length} loads (store lost)`);
      } finally {
        await controllers[2]!.stop();
        await close();
      }
    });

    it('of two controllers over one store only the lease holder acts; the other takes over when it stops', async () => {
      const [ca, cb] = [new CountingAdapters(), new CountingAdapters()];
      const [a, b] = [make(ca), make(cb)];
      const reports: RoundReport[][] = [[], []];
      for (let i = 0; i < 4; i++) {
        const [ra, rb] = await Promise.all([a.reconcileNow(), b.reconcileNow()]);
        reports[0]!.push(ra);
        reports[1]!.push(rb);
      }
      const leaders = reports.map((rs) => rs.filter((r) => r.leader).length);
      expect(leaders.sort()).toEqual([0, 4]);
      expect(ca.loads.length + cb.loads.length).toBe(WANTED_TOTAL);
      expect(Math.min(ca.loads.length, cb.loads.length)).toBe(0);
      expect(replicaCounts(await fleet.resident())).toEqual(WANTED);

      // The leader stops (releasing the lease); new demand appears; the other acts on its next round.
      const [leader, follower, followerClient] = ca.loads.length > 0 ? [a, b, cb] : [b, a, ca];
      const counts = `${ca.loads.length} + ${cb.loads.length}`;
      await leader.stop();
      await recordDemand(store, { 'lora-7': 10 });
      const next = await follower.reconcileNow();
      expect(next.leader).toBe(true);
      expect(next.loaded.map((l) => l.adapter)).toEqual(['lora-7']);
      expect(followerClient.loads).toHaveLength(1);
      console.info(`[adapters ${kind}] two controllers: loads ${counts}; after takeover ${followerClient.loads.length}`);
    });

    it('re-loads what an engine lost when it restarted', async () => {
      const client = new CountingAdapters();
      const c = make(client);
      await rounds(c, 2);
      const before = await fleet.resident();
      const lost = before.get('sim-2')!;
      expect(lost.length).toBeGreaterThan(0);
      await fleet.restart(2);
      expect((await fleet.resident()).get('sim-2')).toEqual([]);
      const loadsBefore = client.loads.length;
      const reports = await rounds(c, 3);
      const after = await fleet.resident();
      expect(replicaCounts(after)).toEqual(WANTED);
      for (const names of after.values()) expect(names.length).toBeLessThanOrEqual(4);
      expect(client.loads.length - loadsBefore).toBe(lost.length);
      expect(reports[0]!.loaded).toHaveLength(lost.length);
      expect(client.unloads).toHaveLength(0);
      console.info(`[adapters ${kind}] engine restart: sim-2 lost ${lost.length} (${lost.join(', ')}); ${client.loads.length - loadsBefore} loads to recover`);
    });
  });
}

controllerSuite('memory', async () => {
  const store = memoryAdapterState();
  return { store, close: () => store.close() };
});

describe.runIf(REDIS_URL)('with Redis', () => {
  let admin: Redis;
  let client: Redis;
  const prefixes: string[] = [];
  beforeAll(async () => {
    admin = new Redis(REDIS_URL!);
    client = new Redis(REDIS_URL!, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000 });
    await client.connect();
  });
  afterAll(async () => {
    for (const prefix of prefixes) {
      let cursor = '0';
      do {
        const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        if (keys.length > 0) await admin.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
    }
    await client?.quit();
    await admin?.quit();
  });

  controllerSuite('Redis', async () => {
    const keyPrefix = `switchyard-test:adapters-ctl:${randomUUID()}:`;
    prefixes.push(keyPrefix);
    return { store: redisAdapterState({ redis: client, keyPrefix }), close: async () => {} };
  });
});

describe('AdaptersController: failures, cold starts and the loop', () => {
  let fleet: Fleet | undefined;
  const controllers: AdaptersController[] = [];
  afterEach(async () => {
    await Promise.all(controllers.splice(0).map((c) => c.stop()));
    await fleet?.close();
    fleet = undefined;
  });

  it('records a failed load with the engine message, backs off there, and places the adapter elsewhere', async () => {
    // sim-0 really holds 1 adapter but claims the default 4.
    fleet = await startFleet(2, [{ maxLoras: 1 }]);
    const store = memoryAdapterState();
    await recordDemand(store, { 'lora-0': 10, 'lora-1': 10, 'lora-2': 10, 'lora-3': 10 });
    const failures: [string, string, string, string][] = [];
    const client = new CountingAdapters();
    const f = fleet;
    const c = new AdaptersController({
      store,
      engines: () => f.engines,
      adapters: async () => registry,
      client,
      logger: silent,
      hooks: { onFailure: (e, a, reason, op) => failures.push([e, a, reason, op]) },
      options: { retryBaseMs: 60_000 },
    });
    controllers.push(c);
    const first = await c.reconcileNow();
    expect(first.failed).toHaveLength(1);
    const failed = first.failed[0]!;
    expect(failed).toMatchObject({ engine: 'sim-0', operation: 'load' });
    expect(failed.reason).toMatch(/400: Cannot load LoRA adapter '.*': 1 adapters are already resident \(max_loras=1\)/);
    expect(failures).toEqual([[failed.engine, failed.adapter, failed.reason, 'load']]);
    expect((await store.placements()).find((p) => p.engine === 'sim-0' && p.adapter === failed.adapter)).toMatchObject({ state: 'failed', reason: failed.reason });

    const second = await c.reconcileNow();
    expect(second.loaded).toEqual([{ engine: 'sim-1', adapter: failed.adapter }]);
    expect(second.failed).toHaveLength(0);
    const resident = await fleet.resident();
    expect(Object.keys(replicaCounts(resident)).sort()).toEqual(['lora-0', 'lora-1', 'lora-2', 'lora-3']);
    // A third round tries nothing on sim-0 while the pair backs off.
    expect((await c.reconcileNow()).loaded).toHaveLength(0);
    expect(client.loads.filter((l) => !l.ok)).toHaveLength(1);
  });

  it('loadNow: one load for concurrent cold starts of a pair, room made on a full engine by unloading the least recently used', async () => {
    fleet = await startFleet(1);
    let t = Date.now();
    const now = () => t;
    const store = memoryAdapterState({ now });
    const client = new CountingAdapters();
    const f = fleet;
    const loaded: string[] = [];
    const c = new AdaptersController({
      store,
      engines: () => f.engines,
      adapters: async () => registry,
      client,
      logger: silent,
      options: { now, placement: { minResidencyMs: 0 } },
      hooks: { onLoad: (_e, a) => loaded.push(a) },
    });
    controllers.push(c);
    // Requested 40, 30, 20, 10 minutes ago: idle by now.
    const start = t;
    for (let i = 0; i < 4; i++) {
      t = start - (40 - i * 10) * 60_000;
      await store.recordDemand(`lora-${i}`);
    }
    t = start;
    await Promise.all(Array.from({ length: 5 }, () => c.loadNow('lora-0', 'sim-0')));
    expect(client.loads).toEqual([{ engine: 'sim-0', adapter: 'lora-0', ok: true }]);
    for (let i = 1; i < 4; i++) await c.loadNow(`lora-${i}`, 'sim-0');
    expect((await fleet.resident()).get('sim-0')).toEqual(['lora-0', 'lora-1', 'lora-2', 'lora-3']);
    await c.loadNow('lora-0', 'sim-0'); // already resident: nothing to do
    expect(client.loads).toHaveLength(4);

    await store.recordDemand('lora-8');
    await c.loadNow('lora-8', 'sim-0');
    expect(client.unloads).toEqual([{ engine: 'sim-0', adapter: 'lora-0', ok: true }]);
    expect((await fleet.resident()).get('sim-0')).toEqual(['lora-1', 'lora-2', 'lora-3', 'lora-8']);
    expect((await store.placements()).find((p) => p.adapter === 'lora-8')).toMatchObject({ engine: 'sim-0', state: 'resident' });
    expect(loaded).toEqual(['lora-0', 'lora-1', 'lora-2', 'lora-3', 'lora-8']);

    await expect(c.loadNow('nope', 'sim-0')).rejects.toThrow(/not registered/);
    await expect(c.loadNow('lora-9', 'sim-9')).rejects.toThrow(/unknown engine/);
    // Every adapter there is active now: no room for another.
    for (const name of ['lora-1', 'lora-2', 'lora-3']) await store.recordDemand(name);
    await expect(c.loadNow('lora-9', 'sim-0')).rejects.toThrow(/is full \(4 of 4 adapters\)/);
  });

  it('start() runs a round at once and then every intervalMs, nudge() runs one without waiting, stop() ends them', async () => {
    fleet = await startFleet(2);
    const store = memoryAdapterState();
    await recordDemand(store, { 'lora-0': 100, 'lora-1': 10 });
    const f = fleet;
    const everywhere = async (): Promise<string[]> => [...(await f.resident()).values()].flat();
    let roundsRun = 0;
    const c = new AdaptersController({
      store,
      engines: () => f.engines,
      adapters: async () => registry,
      logger: silent,
      options: { intervalMs: 100, leaseTtlMs: 1_000 },
      hooks: { onRound: () => roundsRun++ },
    });
    controllers.push(c);
    c.start();
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && roundsRun < 4) await sleep(20);
    expect(roundsRun).toBeGreaterThanOrEqual(4);
    expect(replicaCounts(await fleet.resident())).toEqual({ 'lora-0': 2, 'lora-1': 1 });
    expect(c.leader).toBe(true);
    await c.stop();
    const stopped = roundsRun;
    await sleep(300);
    expect(roundsRun).toBe(stopped);
    expect(c.leader).toBe(false);
    await expect(c.reconcileNow()).rejects.toThrow(/stopped/);
    // The lease was released: another holder gets it at once.
    expect(await store.acquireLease('someone-else', 1_000)).toBe(true);
    await store.releaseLease('someone-else');

    // A loop with a long interval: new demand is acted on at the nudge, not 30 s later.
    let slowRounds = 0;
    const slow = new AdaptersController({
      store,
      engines: () => f.engines,
      adapters: async () => registry,
      logger: silent,
      options: { intervalMs: 30_000, leaseTtlMs: 60_000 },
      hooks: { onRound: () => slowRounds++ },
    });
    controllers.push(slow);
    slow.start();
    while (slowRounds === 0) await sleep(5); // the round start() runs at once
    await recordDemand(store, { 'lora-2': 1 });
    const t0 = Date.now();
    slow.nudge();
    while (Date.now() - t0 < 3_000 && !(await everywhere()).includes('lora-2')) await sleep(10);
    expect(await everywhere()).toContain('lora-2');
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(slowRounds).toBe(2);
  });
});
