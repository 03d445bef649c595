import { describe, expect, it } from 'vitest';
import { SimulatedFleet } from '../../../bench/replay/fleet.js';
import { DEFAULT_ENGINE_PERF, type EnginePerf, type EngineSnapshot } from '../../../core/engine.js';
import { createRng } from '../../../core/hash.js';
import { TimingModel } from '../../../engine-sim/timing-model.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';
import type { BlockHash } from '../../../kvcache/types.js';
import { Calibration } from '../../../router/placement/calibration.js';
import { OutputLengths } from '../../../router/placement/output-length.js';
import { Placement } from '../../../router/placement/place.js';
import { createPipeline } from '../../../router/routing/pipeline.js';
import { type PerfSource, specPerf } from '../../../router/routing/plugins.js';
import { feltTtft, LOCALITY_WEIGHT, prefixCacheScorer, TTFT_FELT_MS, TTFT_WEIGHT } from '../../../router/routing/plugins/prefix-cache.js';
import type { RequestFeatures } from '../../../router/routing/types.js';
import { engine, request } from './fixtures.js';

/** A snapshot with the gateway's exact counts of its work on the engine. */
function busy(
  id: string,
  o: { inFlight?: number; pending?: number; kv?: number; out?: number; rate?: number; perf?: Partial<EnginePerf> } = {},
): EngineSnapshot {
  const base = engine(id, { inFlight: o.inFlight ?? 0, pendingPrefillTokens: o.pending ?? 0 });
  return {
    ...base,
    spec: o.perf === undefined ? base.spec : { ...base.spec, perf: o.perf },
    inFlightKvTokens: o.kv ?? 0,
    inFlightOutputTokens: o.out ?? 0,
    recentPrefillRate: o.rate ?? 0,
  };
}

/** `count` requests on the engine, each with a prompt of `prompt` tokens and `out` tokens to generate. */
const decoding = (id: string, count: number, prompt = 2000, out = 200, extra: Parameters<typeof busy>[1] = {}) =>
  busy(id, { inFlight: count, kv: count * (prompt + out / 2), out: count * out, ...extra });

function route(engines: EngineSnapshot[], req: RequestFeatures, sources: { perf?: PerfSource; cacheFill?: (e: EngineSnapshot) => number } = {}) {
  const pipeline = createPipeline({ policy: 'prefix-cache' }, { rng: createRng(1), ...sources });
  const decision = pipeline.route(req, engines);
  if (decision === undefined) throw new Error('no engine');
  return decision;
}

const chosen = (engines: EngineSnapshot[], req: RequestFeatures, sources: Parameters<typeof route>[2] = {}) => route(engines, req, sources).engine.spec.id;

function scores(engines: EngineSnapshot[], req: RequestFeatures, fill = 0): number[] {
  return prefixCacheScorer({ rng: () => 0, perf: specPerf, cacheFill: () => fill }).score(req, engines);
}

/** A prompt of `totalBlocks` blocks, of which each engine named in `held` holds that many leading ones. */
const withPrefix = (promptTokens: number, totalBlocks: number, held: Record<string, number>, extra: Partial<RequestFeatures> = {}) =>
  request({ promptTokens, outputTokens: 200, prefix: { totalBlocks, matches: new Map(Object.entries(held)) }, ...extra });

describe('prefix-cache scorer: the arithmetic', () => {
  it('scores cheapest cost over each cost, from the hand-computed costs of two placements', () => {
    const PERF: EnginePerf = { prefillTokensPerSec: 10_000, decodeBaseMs: 5, decodeMsPer1kKvTokens: 0.1 };
    const engines = [busy('a', { inFlight: 2, pending: 1000, kv: 20_000, out: 300 }), busy('b')];
    // 10 blocks of a 4,000-token prompt; a holds 6; 2 recent sharers of that prefix.
    const req = request({ promptTokens: 4000, outputTokens: 101, prefix: { totalBlocks: 10, matches: new Map([['a', 6]]), recentSharers: 2 } });
    const fills: Record<string, number> = { a: 0.9, b: 0.5 };
    const s = prefixCacheScorer({ rng: () => 0, perf: () => PERF, cacheFill: (e) => fills[e.spec.id]! }).score(req, engines);

    // a: 1,600 uncached. TTFT (1,000 + 1,600) / 10K/s + step(24,000) = 267.4; decode 100 x step(24,050.5) = 740.505;
    // externality 2 x 160 + 0.40505 x min(2 x 101, 300 / 2) = 380.7575; it copies nothing.
    const costA = feltTtft(267.4) + 740.505 + 380.7575;
    // b: 4,000 uncached, of which 2,400 (6 blocks) a copy of a's: copyMs 240, spread over 1 + 2 / (1 holder + 1) = 2
    // requests in the TTFT term, and charged at b's fill (0.5) in the locality term.
    const locality = LOCALITY_WEIGHT.empty + (LOCALITY_WEIGHT.full - LOCALITY_WEIGHT.empty) * 0.5;
    const costB = feltTtft(405.4 - 240 + 240 / 2) + 540.505 + 0 + locality * 240;
    expect(s[0]).toBe(1);
    expect(s[1]).toBeCloseTo(costA / costB, 9);
  });

  it('feels a short wait for the first token at its length and a long one at up to TTFT_WEIGHT times it', () => {
    expect(feltTtft(0)).toBe(0);
    expect(feltTtft(TTFT_FELT_MS)).toBeCloseTo(TTFT_FELT_MS * (1 + (TTFT_WEIGHT - 1) / 2), 9);
    expect(feltTtft(10) / 10).toBeLessThan(1.05);
    expect(feltTtft(60_000) / 60_000).toBeGreaterThan(TTFT_WEIGHT - 0.05);
    // Felt time only grows with the wait.
    for (let t = 0; t < 10_000; t += 250) expect(feltTtft(t + 250)).toBeGreaterThan(feltTtft(t));
  });

  it('explains the decision by what the engines hold', () => {
    const req = withPrefix(4000, 60, { a: 50 });
    expect(route([busy('a'), busy('b')], req).reason).toBe('prefix-hit');
    expect(route([busy('a', { pending: 200_000 }), busy('b')], req).reason).toBe('prefix-overloaded');
    expect(route([busy('a'), busy('b', { inFlight: 1, kv: 3000, out: 200 })], withPrefix(4000, 60, { a: 50, b: 50 })).reason).toBe('prefix-shared');
    expect(route([busy('a'), busy('b')], withPrefix(4000, 60, {})).reason).toBe('miss-least-loaded');
  });
});

describe('prefix-cache scorer: each term moves the decision the right way', () => {
  it('more pending prefill on an engine raises its TTFT and loses it the request', () => {
    const req = request({ promptTokens: 2000, outputTokens: 200 });
    expect(chosen([busy('a', { inFlight: 1, pending: 20_000 }), busy('b', { inFlight: 1 })], req)).toBe('b');
    expect(chosen([busy('a', { inFlight: 1 }), busy('b', { inFlight: 1, pending: 20_000 })], req)).toBe('a');
    // The gap is in the TTFT alone: the same in-flight counts, the same KV.
    expect(chosen([busy('a', { inFlight: 1, pending: 3000 }), busy('b', { inFlight: 1, pending: 2000 })], req)).toBe('b');
  });

  it('a prefix match lowers the TTFT and wins over an equally loaded engine', () => {
    const req = withPrefix(8000, 125, { b: 120 });
    expect(chosen([decoding('a', 2), decoding('b', 2)], req)).toBe('b');
    // It keeps winning against some queued prefill: the 7,680 tokens it holds are worth more than 2,000 queued.
    expect(chosen([decoding('a', 2), decoding('b', 2, 2000, 200, { pending: 2000 })], req)).toBe('b');
  });

  it('more KV in flight (a bigger decode batch) raises the decode time and loses', () => {
    const req = request({ promptTokens: 1000, outputTokens: 200 });
    // The same number of requests in flight, the same output to come; only the KV they read differs.
    const engines = [busy('a', { inFlight: 4, kv: 400_000, out: 800 }), busy('b', { inFlight: 4, kv: 20_000, out: 800 })];
    expect(chosen(engines, req)).toBe('b');
    expect(chosen([engines[1]!, engines[0]!], req)).toBe('b');
  });

  it('externality: the engine with more requests decoding loses a long uncached prompt', () => {
    // The same KV in flight, no queued prefill: the decode and the TTFT are equal, the others' wait is not.
    const req = request({ promptTokens: 16_000, outputTokens: 200 });
    const s = scores([busy('a', { inFlight: 12, kv: 40_000, out: 2400 }), busy('b', { inFlight: 2, kv: 40_000, out: 400 })], req);
    expect(s[1]).toBe(1);
    expect(s[0]).toBeLessThan(0.6);
  });

  it('locality: a prefix held on one engine is preferred over an equally loaded empty one, more so when caches are full', () => {
    const req = withPrefix(8000, 100, { a: 90 }, { outputTokens: 100 });
    const idle = [busy('a'), busy('b')];
    const low = scores(idle, req, 0);
    const high = scores(idle, req, 1);
    expect(low[0]).toBe(1);
    expect(high[0]).toBe(1);
    expect(high[1]).toBeLessThan(low[1]!);
    // As the holder gets busier, the request leaves it sooner for an engine with room than for one whose cache is
    // full: there is a load at which the copy is made on an empty cache and not on a full one, never the reverse.
    const loaded = (pending: number) => [busy('a', { inFlight: 2, pending }), busy('b')];
    const pendings = Array.from({ length: 40 }, (_, k) => Math.round(500 * 1.25 ** k));
    const to = (pending: number, fill: (e: EngineSnapshot) => number) => chosen(loaded(pending), req, { cacheFill: fill });
    const flip = pendings.find((p) => to(p, () => 0) === 'b' && to(p, () => 1) === 'a');
    expect(flip).toBeDefined();
    for (const p of pendings) if (to(p, () => 1) === 'b') expect(to(p, () => 0), `pending ${p}`).toBe('b');
    // The fill that counts is the fill of the engine that would take the copy.
    expect(to(flip!, (e) => (e.spec.id === 'b' ? 1 : 0))).toBe('a');
    expect(to(flip!, (e) => (e.spec.id === 'a' ? 1 : 0))).toBe('b');
  });

  it('many recent sharers make a copy cheap: a hot prefix spreads to an idle engine, a cold one stays', () => {
    const prompt = (recentSharers: number) => withPrefix(4200, 66, { a: 62 }, { prefix: { totalBlocks: 66, matches: new Map([['a', 62]]), recentSharers } });
    const engines = (n: number) => [decoding('a', n, 4200, 200), busy('b')];
    // The idle engine's score rises with the sharers: the copy is charged to fewer of them each.
    const cold = scores(engines(4), prompt(0));
    const warm = scores(engines(4), prompt(5));
    const hot = scores(engines(4), prompt(40));
    expect(cold[1]! / cold[0]!).toBeLessThan(warm[1]! / warm[0]!);
    expect(warm[1]! / warm[0]!).toBeLessThan(hot[1]! / hot[0]!);
    // So there is a batch on the holder that keeps a cold prefix there and sends a hot one to the idle engine; and
    // wherever the cold one moves, the hot one does too.
    const batches = Array.from({ length: 64 }, (_, k) => k + 1);
    const flip = batches.find((n) => chosen(engines(n), prompt(0)) === 'a' && chosen(engines(n), prompt(40)) === 'b');
    expect(flip).toBeDefined();
    for (const n of batches) if (chosen(engines(n), prompt(0)) === 'b') expect(chosen(engines(n), prompt(40)), `batch ${n}`).toBe('b');
    // The copy's share shrinks with the sharers, but what it evicts on a full cache does not.
    expect(chosen(engines(flip!), prompt(40), { cacheFill: () => 1 })).toBe('a');
  });

  it('credits the session engine with half the prompt when the index knows nothing of it', () => {
    const req = withPrefix(6000, 94, {});
    const engines = (n: number) => [busy('a'), decoding('b', n, 4900, 200)];
    // Some load on the session's engine that an idle engine beats without the session, and loses to with it.
    const loads = Array.from({ length: 32 }, (_, k) => k + 1);
    const flip = loads.find((n) => chosen(engines(n), req) === 'a' && chosen(engines(n), { ...req, sessionEngine: 'b' }) === 'b');
    expect(flip).toBeDefined();
    expect(route(engines(flip!), { ...req, sessionEngine: 'b' }).reason).toBe('prefix-hit');
    for (const n of loads) if (chosen(engines(n), req) === 'b') expect(chosen(engines(n), { ...req, sessionEngine: 'b' })).toBe('b');
    // With what the best holder holds, when another engine has more of it in the index: equal then.
    expect(chosen([busy('a'), busy('b')], withPrefix(6000, 94, { a: 90 }))).toBe('a');
    expect(scores([busy('a'), busy('b')], withPrefix(6000, 94, { a: 90 }, { sessionEngine: 'b' }))).toEqual([1, 1]);
  });

  it('recent prefill on an engine stretches its decode, up to MAX_PREFILL_SHARE', () => {
    const req = request({ promptTokens: 2000, outputTokens: 200 });
    expect(chosen([decoding('a', 2, 2000, 200, { rate: 15_000 }), decoding('b', 2)], req)).toBe('b');
    expect(chosen([decoding('a', 2), decoding('b', 2, 2000, 200, { rate: 15_000 })], req)).toBe('a');
    // Past the cap, more recent prefill predicts nothing worse: the costs stay finite and equal.
    const capped = scores([decoding('a', 2, 2000, 200, { rate: 27_000 }), decoding('b', 2, 2000, 200, { rate: 3_000_000 })], req);
    expect(capped[0]).toBeCloseTo(1, 12);
    expect(capped[1]).toBeCloseTo(1, 12);
  });

  it('a slower engine (lower figures from the perf source) loses an even choice, and a configured perf counts', () => {
    const req = request({ promptTokens: 2000, outputTokens: 200 });
    const slow: EnginePerf = { prefillTokensPerSec: 15_000, decodeBaseMs: 13, decodeMsPer1kKvTokens: 0.088 };
    const perf: PerfSource = (e) => (e.spec.id === 'a' ? slow : DEFAULT_ENGINE_PERF);
    expect(chosen([decoding('a', 1), decoding('b', 1)], req, { perf })).toBe('b');
    // Without a perf source, the engine's own spec.perf (its configuration) is the prior.
    expect(chosen([decoding('a', 1), decoding('b', 1, 2000, 200, { perf: { decodeBaseMs: 13 } })], req)).toBe('a');
  });
});

// --- The scorer behind the placement step, over a fleet that keeps each request in flight ---------------------------

const BLOCK = 16;

function fleetOf(engines: number, perf?: PerfSource) {
  const fleet = new SimulatedFleet(
    Array.from({ length: engines }, () => new TimingModel()),
    'llama',
    'pending',
    1000,
  );
  const index = new LocalPrefixIndex({ maxEntries: 1_000_000 });
  for (const spec of fleet.specs) index.setCapacity(spec.id, Math.floor(440_000 / BLOCK));
  const calibration = new Calibration();
  const pipeline = createPipeline({}, { rng: createRng(7), perf: perf ?? ((e) => calibration.perf(e.spec)), cacheFill: (e) => index.fill(e.spec.id) });
  const placement = new Placement({ pipeline, fleet, index, calibration, outputs: new OutputLengths(), blockTokens: BLOCK });
  const who = { tenant: 't', model: 'llama' };
  const counts = new Map<string, number>(fleet.specs.map((s) => [s.id, 0]));
  /** Places a request whose prompt is `hashes` at virtual `atMs`; it stays in flight. */
  const place = async (hashes: BlockHash[], atMs: number) => {
    fleet.advance(atMs);
    const matches = await index.match(hashes);
    const promptTokens = hashes.length * BLOCK;
    const features: RequestFeatures = { ...request(), prefix: { totalBlocks: hashes.length, matches }, promptTokens, outputTokens: placement.expectedOutput(who, undefined) };
    const placed = placement.place(features, { hashes, promptTokens, matches }, who, atMs)!;
    counts.set(placed.engineId, counts.get(placed.engineId)! + 1);
    return placed;
  };
  return { fleet, index, place, counts };
}

const blocks = (from: number, n: number): BlockHash[] => Array.from({ length: n }, (_, i) => BigInt(from + i));

describe('prefix-cache through the placement step', () => {
  it('spreads a burst sharing one long system prompt over every engine: no hot spot', async () => {
    const { place, counts, fleet } = fleetOf(4);
    const system = blocks(1, 250); // 4,000 tokens every request shares
    for (let i = 0; i < 40; i++) {
      // Each request's prefill is over by the next arrival (a cached system prompt prefills in no time); it stays
      // decoding. So no queue tells the engines apart, only their decode batches: the case where the hot spot was.
      const placed = await place([...system, ...blocks(1_000_000 + 100 * i, 10)], i * 10);
      placed.firstToken(i * 10 + 5);
    }
    const mean = 40 / 4;
    for (const [id, n] of counts) {
      expect(n, `${id} got ${n} of 40`).toBeLessThanOrEqual(1.5 * mean);
      expect(n, `${id} got ${n} of 40`).toBeGreaterThan(0);
    }
    expect(fleet.snapshot().reduce((sum, e) => sum + e.inFlight, 0)).toBe(40);
  });

  it('keeps each conversation on the engine that holds its history while four of them run side by side', async () => {
    const { place } = fleetOf(4);
    const history = (c: number) => blocks(10_000 * (c + 1), 120);
    const engines: string[][] = [[], [], [], []];
    for (let turn = 0; turn < 3; turn++) {
      // The four conversations' turns arrive together; each turn follows the end of the conversation's last one.
      const placed = [];
      for (let c = 0; c < 4; c++) {
        const p = await place([...history(c), ...blocks(10_000 * (c + 1) + 500 + 10 * turn, 10)], 1000 * turn + c);
        engines[c]!.push(p.engineId);
        placed.push(p);
      }
      for (const p of placed) p.firstToken(1000 * turn + 100);
      for (const p of placed) p.finish({ atMs: 1000 * turn + 500, completionTokens: 200, cachedTokens: undefined, streamed: true });
    }
    for (const turns of engines) expect(new Set(turns).size, turns.join(' ')).toBe(1);
    // Four equal conversations arriving together on four idle engines: one each.
    expect(new Set(engines.map((turns) => turns[0])).size).toBe(4);
  });

  it('sends a slower engine fewer of a burst of distinct prompts', async () => {
    const slow: EnginePerf = { prefillTokensPerSec: 15_000, decodeBaseMs: 13, decodeMsPer1kKvTokens: 0.088 };
    const { place, counts } = fleetOf(2, (e) => (e.spec.id === 'engine-0' ? slow : DEFAULT_ENGINE_PERF));
    for (let i = 0; i < 40; i++) await place(blocks(1_000_000 + 100 * i, 60), i * 5);
    const slowCount = counts.get('engine-0')!;
    const fastCount = counts.get('engine-1')!;
    expect(slowCount).toBeGreaterThan(0);
    expect(slowCount).toBeLessThan(0.6 * fastCount);
  });
});

describe('prefix-cache without prefix features', () => {
  it("keeps a session on its engine when the gateway computes no prefix (kvcache off), while it is not overloaded", () => {
    const pipeline = createPipeline({}, { rng: createRng(1) });
    const req = request({ promptTokens: 3000, outputTokens: 100, sessionEngine: 'b' });
    expect(pipeline.route(req, [engine('a'), engine('b', { inFlight: 1 })])!.engine.spec.id).toBe('b');
    expect(pipeline.route(req, [engine('a'), engine('b', { inFlight: 40, pendingPrefillTokens: 60_000 })])!.engine.spec.id).toBe('a');
  });
});
