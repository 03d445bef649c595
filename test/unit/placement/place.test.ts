import Fastify from 'fastify';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SimulatedFleet } from '../../../bench/replay/fleet.js';
import type { EngineSnapshot } from '../../../core/engine.js';
import { createRng } from '../../../core/hash.js';
import { TimingModel } from '../../../engine-sim/timing-model.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';
import type { BlockHash } from '../../../kvcache/types.js';
import { Calibration } from '../../../router/placement/calibration.js';
import { IndexAudit } from '../../../router/placement/index-audit.js';
import { OutputLengths } from '../../../router/placement/output-length.js';
import { type Outcome, type PlacedRequest, Placement, type PlacementFleet, type PredictionCheck } from '../../../router/placement/place.js';
import { predictLatency, queuedLoad } from '../../../router/routing/engine-model.js';
import { createPipeline } from '../../../router/routing/pipeline.js';
import type { RequestFeatures } from '../../../router/routing/types.js';
import { startFakeFleet } from '../engines/fake-engine.js';

const MODEL = 'llama';
const BLOCK = 16;
const WHO = { tenant: 't', model: MODEL };

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface World {
  readonly fleet: PlacementFleet;
  readonly index: LocalPrefixIndex;
  readonly calibration: Calibration;
  readonly placement: Placement;
  readonly checks: PredictionCheck[];
}

/** The placement step over `fleet`, with its own index, calibration and a prefix-cache pipeline seeded `seed`. */
function world(fleet: PlacementFleet, engineIds: readonly string[], opts: { seed?: number; audit?: boolean } = {}): World {
  const index = new LocalPrefixIndex({ maxEntries: 1_000_000 });
  for (const id of engineIds) index.setCapacity(id, 2000);
  const calibration = new Calibration();
  const pipeline = createPipeline({}, { rng: createRng(opts.seed ?? 42), perf: (e) => calibration.perf(e.spec), cacheFill: (e) => index.fill(e.spec.id) });
  const checks: PredictionCheck[] = [];
  const audit =
    opts.audit === false
      ? undefined
      : new IndexAudit({ registry: new Registry(), log: Fastify({ logger: false }).log, blockTokens: BLOCK, kvEvents: () => false });
  const placement = new Placement({ pipeline, fleet, index, calibration, outputs: new OutputLengths(), audit, blockTokens: BLOCK, onPrediction: (c) => checks.push(c) });
  return { fleet, index, calibration, placement, checks };
}

/** Looks the prompt up in the world's index and places it, as the gateway and the replayer do. */
async function place(w: World, hashes: readonly BlockHash[], nowMs: number, extra: Partial<RequestFeatures> = {}): Promise<PlacedRequest> {
  const matches = await w.index.match(hashes);
  const promptTokens = hashes.length * BLOCK;
  const features: RequestFeatures = {
    model: MODEL,
    endpoint: 'chat',
    pools: undefined,
    exclude: new Set(),
    prefix: { totalBlocks: hashes.length, matches },
    promptTokens,
    outputTokens: w.placement.expectedOutput(WHO, undefined),
    ...extra,
  };
  const placed = w.placement.place(features, { hashes, promptTokens, matches }, WHO, nowMs);
  if (placed === undefined) throw new Error('no engine');
  return placed;
}

const relative = (a: number, b: number) => (a === b ? 0 : Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b)));

const blocks = (from: number, n: number): BlockHash[] => Array.from({ length: n }, (_, i) => BigInt(from + i));

/** The counts routing reads, per engine. */
const counts = (engines: readonly EngineSnapshot[]) =>
  engines.map((e) => ({
    id: e.spec.id,
    inFlight: e.inFlight,
    pendingPrefillTokens: e.pendingPrefillTokens,
    inFlightKvTokens: e.inFlightKvTokens,
    inFlightOutputTokens: e.inFlightOutputTokens,
  }));

function simulatedFleet(n: number): { fleet: SimulatedFleet; ids: string[] } {
  const fleet = new SimulatedFleet(
    Array.from({ length: n }, () => new TimingModel()),
    MODEL,
    'pending',
    1000,
  );
  fleet.advance(0);
  return { fleet, ids: fleet.specs.map((s) => s.id) };
}

describe('the placement step: live and replay decide alike', () => {
  it('makes the same choices and keeps the same counts over the live registry and the simulated fleet', async () => {
    // The live side: real HTTP engines answering /health and /metrics, in the gateway's own registry.
    const { registry, specs } = await startFakeFleet(3, MODEL, cleanups);
    expect(registry.snapshot().map((e) => e.healthy)).toEqual([true, true, true]);

    // The replay side: the replayer's fleet of timing models, named as the live engines are.
    const { fleet: simulated, ids } = simulatedFleet(3);
    expect(ids).toEqual(specs.map((s) => s.id));

    const live = world(registry, ids);
    const replay = world(simulated, ids);
    // Both fleets read their own clock for what decays or ages (the recent prefill rate, how long the head of the
    // prefill queue has run): the registry performance.now(), the replayer the virtual time it is advanced to. The
    // same state includes the same instant, so from here performance.now() is a clock the test moves (nothing else
    // is faked: the engines' servers and the registry's timers are real), and the replayer follows it.
    // The registry recomputes those figures of an engine when the engine changes, and of all engines when its
    // snapshot is more than 100 ms old (SNAPSHOT_REFRESH_MS); the replayer whenever its clock moves. Steps longer than
    // that keep both on the same instant.
    vi.useFakeTimers({ toFake: ['performance'] });
    const tick = (ms: number) => {
      vi.advanceTimersByTime(101 + ms);
      simulated.advance(performance.now());
    };
    tick(0);

    const rng = createRng(5);
    const systems = [blocks(10_000, 40), blocks(20_000, 80), blocks(30_000, 120)];
    const running: { live: PlacedRequest; replay: PlacedRequest; first: boolean }[] = [];
    const chosen = new Set<string>();
    const reasons = new Set<string | undefined>();

    const compare = (what: string) => {
      const a = registry.snapshot();
      const b = simulated.snapshot();
      expect(counts(a), what).toEqual(counts(b));
      expect(a.map((e) => [e.recentPrefillRate, e.prefillHeadAgeMs]), what).toEqual(b.map((e) => [e.recentPrefillRate, e.prefillHeadAgeMs]));
    };

    for (let i = 0; i < 60; i++) {
      tick(Math.floor(rng() * 100));
      const kind = rng();
      const hashes =
        kind < 0.75
          ? [...systems[Math.floor(rng() * systems.length)]!, ...blocks(1_000_000 + 1000 * i, 1 + Math.floor(rng() * 8))]
          : blocks(2_000_000 + 1000 * i, 10 + Math.floor(rng() * 100));
      const a = await place(live, hashes, performance.now());
      const b = await place(replay, hashes, performance.now());
      expect(a.engineId, `request ${i}`).toBe(b.engineId);
      expect(a.decision.reason).toBe(b.decision.reason);
      expect(a.matchedBlocks).toBe(b.matchedBlocks);
      expect(a.predictedTtftMs).toBe(b.predictedTtftMs);
      expect(a.predictedE2eMs).toBe(b.predictedE2eMs);
      chosen.add(a.engineId);
      reasons.add(a.decision.reason);
      running.push({ live: a, replay: b, first: false });
      compare(`after placing request ${i}`);

      // What happens meanwhile to the requests in flight: first tokens, ends (streamed or whole, with cached
      // tokens that agree with the index or not), failures before the first token.
      for (let r = running.length - 1; r >= 0; r--) {
        const req = running[r]!;
        const roll = rng();
        if (roll >= 0.5) continue;
        tick(Math.floor(rng() * 50));
        if (!req.first && roll < 0.05) {
          req.live.abandon();
          req.replay.abandon();
          running.splice(r, 1);
        } else if (!req.first && roll < 0.5) {
          req.live.firstToken(performance.now());
          req.replay.firstToken(performance.now());
          req.first = true;
        } else if (req.first && roll < 0.3) {
          const cached = rng();
          const outcome: Outcome = {
            atMs: performance.now(),
            completionTokens: 1 + Math.floor(rng() * 300),
            cachedTokens: cached < 0.6 ? req.live.matchedBlocks * BLOCK : cached < 0.8 ? 0 : undefined,
            streamed: rng() < 0.8,
          };
          req.live.finish(outcome);
          req.replay.finish(outcome);
          running.splice(r, 1);
        } else {
          continue;
        }
        compare(`after an event of request ${i}`);
      }
    }
    // The sequence exercised the fleet: every engine was chosen, and what was learnt is the same on both sides.
    expect(chosen.size).toBe(3);
    expect(reasons.size).toBeGreaterThan(1);
    expect(live.checks.length).toBeGreaterThan(5);
    expect(live.checks).toEqual(replay.checks);
    for (const spec of specs) {
      expect(live.calibration.perf(spec)).toEqual(replay.calibration.perf(spec));
      expect(live.calibration.overheadMs(spec)).toBe(replay.calibration.overheadMs(spec));
    }
    const probe = [...systems[2]!, ...blocks(9_000_000, 4)];
    expect(await live.index.match(probe)).toEqual(await replay.index.match(probe));
    expect(live.placement.expectedOutput(WHO, undefined)).toBe(replay.placement.expectedOutput(WHO, undefined));
  });
});

describe('the placement step: keeping the index and the counts true', () => {
  it('abandon() before the first token gives back the slot and the prefill, and unrecords the blocks the engine lacked', async () => {
    const { fleet, ids } = simulatedFleet(2);
    const w = world(fleet, ids);
    const prompt = blocks(100, 8);
    // engine-0 held the first 4 blocks already; engine-1 holds an unrelated prompt.
    w.index.recordStored('engine-0', prompt.slice(0, 4));
    w.index.recordStored('engine-1', blocks(500, 6));
    const placed = await place(w, prompt, 0);
    expect(placed.engineId).toBe('engine-0');
    expect(placed.matchedBlocks).toBe(4);
    // Recorded at once for a burst to follow, and counted on the engine.
    expect((await w.index.match(prompt)).get('engine-0')).toBe(8);
    const [e0] = fleet.snapshot();
    expect(e0).toMatchObject({ inFlight: 1, pendingPrefillTokens: 64 });
    expect(e0!.inFlightKvTokens).toBeGreaterThan(128);

    // Another request behind it on the same engine, still prefilling.
    const other = await place(w, blocks(900, 5), 1, { exclude: new Set(['engine-1']) });
    expect(other.engineId).toBe('engine-0');
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 2, pendingPrefillTokens: 64 + 80 });

    placed.abandon();
    // Its slot and its prefill are given back; the other request's stay.
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 1, pendingPrefillTokens: 80, inFlightOutputTokens: other.decision.engine.inFlightOutputTokens });
    other.abandon();
    expect(counts(fleet.snapshot())).toEqual(counts(simulatedFleet(2).fleet.snapshot()));
    const after = await w.index.match(prompt);
    expect(after.get('engine-0')).toBe(4);
    expect(after.has('engine-1')).toBe(false);
    expect((await w.index.match(blocks(500, 6))).get('engine-1')).toBe(6);
    // Once only: the slot is not given back twice, and nothing learnt.
    placed.abandon();
    placed.finish({ atMs: 100, completionTokens: 10, cachedTokens: 0, streamed: true });
    expect(fleet.snapshot()[0]!.inFlight).toBe(0);
    expect(w.checks).toEqual([]);
  });

  it('abandon() after the first token keeps the blocks: the engine computed them', async () => {
    const { fleet, ids } = simulatedFleet(1);
    const w = world(fleet, ids);
    const prompt = blocks(100, 8);
    const placed = await place(w, prompt, 0);
    placed.firstToken(30);
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 1, pendingPrefillTokens: 0 });
    placed.abandon();
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 0, pendingPrefillTokens: 0, inFlightKvTokens: 0 });
    expect((await w.index.match(prompt)).get('engine-0')).toBe(8);
  });

  /** engine-0 is known to hold all 8 blocks (128 tokens) of `prompt`; a request for it, alone or behind `ahead`. */
  async function claimed(opts: { ahead?: boolean; audit?: boolean } = {}) {
    const { fleet, ids } = simulatedFleet(1);
    const w = world(fleet, ids, { audit: opts.audit });
    const prompt = blocks(100, 8);
    w.index.recordStored('engine-0', prompt);
    if (opts.ahead === true) await place(w, blocks(7000, 20), 0);
    const placed = await place(w, prompt, 1);
    expect(placed.matchedBlocks).toBe(8);
    const held = async () => (await w.index.match(prompt)).get('engine-0') ?? 0;
    return { placed, held };
  }

  it('finish() with far fewer cached tokens than claimed, nothing queued ahead: the unreported blocks leave the index', async () => {
    const { placed, held } = await claimed();
    placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: 16, streamed: true });
    expect(await held()).toBe(1);
  });

  it('finish() with cached tokens that agree with the claim removes nothing', async () => {
    const { placed, held } = await claimed();
    // vLLM never caches the prompt's last token: one block less is agreement.
    placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: 112, streamed: true });
    expect(await held()).toBe(8);
  });

  it('finish() removes nothing while prefill was queued ahead: the claim may be a prefill under way', async () => {
    const { placed, held } = await claimed({ ahead: true });
    placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: 0, streamed: true });
    expect(await held()).toBe(8);
  });

  it('finish() removes nothing when the engine had more than half of the claim, or reported no count', async () => {
    const half = await claimed();
    half.placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: 80, streamed: true });
    expect(await half.held()).toBe(8);
    const unreported = await claimed();
    unreported.placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: undefined, streamed: true });
    expect(await unreported.held()).toBe(8);
  });

  it('finish() removes nothing when the engine is short of the claim by no more than a block', async () => {
    const { fleet, ids } = simulatedFleet(1);
    const w = world(fleet, ids);
    const prompt = blocks(100, 1);
    w.index.recordStored('engine-0', prompt);
    const placed = await place(w, prompt, 0);
    expect(placed.matchedBlocks).toBe(1);
    // A one-block prompt: the engine never caches the last prompt token, so it reports none of it.
    placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: 0, streamed: true });
    expect((await w.index.match(prompt)).get('engine-0')).toBe(1);
  });

  it('finish() takes back a false claim without an audit attached too, as the replayer needs', async () => {
    const unaudited = await claimed({ audit: false });
    unaudited.placed.finish({ atMs: 50, completionTokens: 10, cachedTokens: 32, streamed: false });
    expect(await unaudited.held()).toBe(2);
  });

  it('finish() releases every count of the request, and the output length is learnt', async () => {
    const { fleet, ids } = simulatedFleet(1);
    const w = world(fleet, ids);
    const a = await place(w, blocks(100, 8), 0);
    const b = await place(w, blocks(300, 30), 0);
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 2, pendingPrefillTokens: 128 + 480 });
    a.finish({ atMs: 40, completionTokens: 40, cachedTokens: 0, streamed: false });
    // Finished without a first token seen (an answer that came whole): its prefill is done too.
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 1, pendingPrefillTokens: 480 });
    expect(w.placement.expectedOutput(WHO, undefined)).toBe(40);
    b.finish({ atMs: 60, completionTokens: 80, cachedTokens: 0, streamed: false });
    expect(fleet.snapshot()[0]).toMatchObject({ inFlight: 0, pendingPrefillTokens: 0, inFlightKvTokens: 0, inFlightOutputTokens: 0 });
  });
});

describe('the placement step: hot prefixes', () => {
  /**
   * engine-0 holds prefixes P and Q and decodes `busy` requests; 40 requests lately shared P (hot) or Q (P cold),
   * all ended. Where does the next request for P go?
   */
  async function next(busy: number, hot: boolean): Promise<string> {
    const { fleet, ids } = simulatedFleet(2);
    const w = world(fleet, ids);
    const p = blocks(100_000, 62);
    const q = blocks(200_000, 62);
    w.index.recordStored('engine-0', p);
    w.index.recordStored('engine-0', q);
    const onEngine0 = { exclude: new Set(['engine-1']) };
    for (let i = 0; i < busy; i++) (await place(w, blocks(1_000_000 + 1000 * i, 66), 0, onEngine0)).firstToken(1);
    for (let i = 0; i < 40; i++) {
      const r = await place(w, [...(hot ? p : q), ...blocks(2_000_000 + 100 * i, 4)], 10 + i, onEngine0);
      r.firstToken(60 + i);
      r.finish({ atMs: 100 + i, completionTokens: 256, cachedTokens: undefined, streamed: false });
    }
    expect(fleet.snapshot().map((e) => e.inFlight)).toEqual([busy, 0]);
    return (await place(w, [...p, ...blocks(3_000_000, 4)], 200)).engineId;
  }

  it('counts the requests that lately shared a prefix: a hot one spreads to an idle engine, a cold one stays', async () => {
    const batches = [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
    const cold: string[] = [];
    const hot: string[] = [];
    for (const n of batches) {
      cold.push(await next(n, false));
      hot.push(await next(n, true));
    }
    // Some batch on the holder keeps a cold prefix there and sends the hot one away; never the reverse.
    expect(batches.some((_, k) => cold[k] === 'engine-0' && hot[k] === 'engine-1'), `cold ${cold.join(' ')} / hot ${hot.join(' ')}`).toBe(true);
    batches.forEach((_, k) => {
      if (cold[k] === 'engine-1') expect(hot[k]).toBe('engine-1');
    });
  });
});

describe('the placement step: predictions against outcomes', () => {
  it('reports predicted and observed TTFT and TPOT of a streamed answer, and learns from it', async () => {
    const { fleet, ids } = simulatedFleet(2);
    const w = world(fleet, ids);
    const before = w.calibration.perf(fleet.specs[0]!);
    const engineBefore = fleet.snapshot()[0]!;
    const placed = await place(w, blocks(100, 1000), 1000, { outputTokens: 101 });
    expect(placed.engineId).toBe('engine-0');
    // The engine model's prediction for the engine as it was (no overhead learnt yet).
    const p = predictLatency(before, queuedLoad(engineBefore), { promptTokens: 16_000, uncachedTokens: 16_000, outputTokens: 101 });
    expect(placed.predictedTtftMs).toBeCloseTo(p.ttftMs, 9);
    expect(placed.predictedTpotMs).toBeCloseTo(p.decodeMs / 100, 9);
    expect(placed.predictedE2eMs).toBeCloseTo(p.ttftMs + p.decodeMs, 9);

    placed.firstToken(1000 + 4000);
    placed.finish({ atMs: 1000 + 4000 + 100 * 30, completionTokens: 101, cachedTokens: 0, streamed: true });
    expect(w.checks).toEqual([{ engineId: 'engine-0', predictedTtftMs: placed.predictedTtftMs, ttftMs: 4000, predictedTpotMs: placed.predictedTpotMs, tpotMs: 30 }]);
    // 4 s for 16,000 tokens and 30 ms steps: far slower than the prior; calibration moved towards it.
    const after = w.calibration.perf(fleet.specs[0]!);
    expect(after.prefillTokensPerSec).toBeLessThan(before.prefillTokensPerSec);
    expect(after.decodeBaseMs).toBeGreaterThan(before.decodeBaseMs);
    expect(w.calibration.perf(fleet.specs[1]!)).toEqual(before);

    // A short prompt whose first token is as slow shows a fixed latency besides prefill and steps; the next
    // prediction for that engine carries it.
    for (let i = 0; i < 5; i++) {
      const at = 10_000 * (i + 1);
      const short = await place(w, blocks(3000 + 100 * i, 10), at, { outputTokens: 101, exclude: new Set(['engine-1']) });
      short.firstToken(at + 500);
      short.finish({ atMs: at + 500 + 100 * 30, completionTokens: 101, cachedTokens: 0, streamed: true });
    }
    const overheadMs = w.calibration.overheadMs(fleet.specs[0]!);
    expect(overheadMs).toBeGreaterThan(0);
    const ahead = fleet.snapshot()[0]!;
    const next = await place(w, blocks(5000, 1000), 100_000, { outputTokens: 101, exclude: new Set(['engine-1']) });
    const q = predictLatency(w.calibration.perf(fleet.specs[0]!), queuedLoad(ahead), { promptTokens: 16_000, uncachedTokens: 16_000, outputTokens: 101 });
    expect(next.predictedTtftMs).toBeCloseTo(q.ttftMs + overheadMs, 9);
    expect(next.predictedE2eMs).toBeCloseTo(q.ttftMs + overheadMs + q.decodeMs, 9);
  });

  it('learns no prefill rate from a first token that mostly waited for the queue ahead of it', async () => {
    const { fleet, ids } = simulatedFleet(1);
    const w = world(fleet, ids);
    const spec = fleet.specs[0]!;
    const prior = w.calibration.perf(spec);
    // 16,000 tokens queued, then a 160-token prompt: its TTFT is mostly the queue, which the gateway only estimates.
    await place(w, blocks(100, 1000), 0);
    const behind = await place(w, blocks(5000, 10), 0);
    behind.firstToken(3000);
    behind.finish({ atMs: 3000 + 100 * 30, completionTokens: 101, cachedTokens: 0, streamed: true });
    expect(w.calibration.perf(spec).prefillTokensPerSec).toBe(prior.prefillTokensPerSec);
    expect(w.calibration.overheadMs(spec)).toBe(0);
    // Its gaps still teach the step time, and its prediction is still checked.
    expect(w.calibration.perf(spec).decodeBaseMs).toBeGreaterThan(prior.decodeBaseMs);
    expect(w.checks).toHaveLength(1);
  });

  it('reports no TPOT for a one-token stream, and nothing at all for an answer that came whole', async () => {
    const { fleet, ids } = simulatedFleet(1);
    const w = world(fleet, ids);
    const one = await place(w, blocks(100, 10), 0, { outputTokens: 1 });
    expect(one.predictedTpotMs).toBe(0);
    one.firstToken(50);
    one.finish({ atMs: 50, completionTokens: 1, cachedTokens: 0, streamed: true });
    expect(w.checks).toHaveLength(1);
    expect(w.checks[0]).toMatchObject({ engineId: 'engine-0', ttftMs: 50, tpotMs: undefined });

    const prior = w.calibration.perf(fleet.specs[0]!);
    const whole = await place(w, blocks(300, 10), 100);
    whole.firstToken(400);
    whole.finish({ atMs: 900, completionTokens: 50, cachedTokens: 0, streamed: false });
    expect(w.checks).toHaveLength(1);
    // A whole answer's timing says nothing of its first token or its steps: calibration is left alone.
    expect(w.calibration.perf(fleet.specs[0]!)).toEqual(prior);
  });
});
