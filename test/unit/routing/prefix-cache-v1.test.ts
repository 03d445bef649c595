import { describe, expect, it } from 'vitest';
import type { EngineSnapshot } from '../../../core/engine.js';
import { createRng } from '../../../core/hash.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';
import { createPipeline } from '../../../router/routing/pipeline.js';
import { LOCALITY, prefixCacheV1Scorer as prefixCacheScorer } from '../../../router/routing/plugins/prefix-cache-v1.js';
import { IN_FLIGHT_TOKENS } from '../../../router/routing/plugins/queued-work.js';
import type { RequestFeatures } from '../../../router/routing/types.js';
import { engine, prefix, request } from './fixtures.js';

/**
 * A fleet under a burst: every routed request stays in flight (nothing finishes), and the chosen engine then
 * holds the request's shared prefix, as the index records the router's own decisions.
 */
function burst(
  count: number,
  makeRequest: (holders: ReadonlySet<string>) => RequestFeatures,
  opts: { pendingPrefillTokens?: number } = {},
  ids = ['a', 'b', 'c', 'd'],
) {
  const pipeline = createPipeline({ policy: 'prefix-cache-v1' }, { rng: createRng(7) });
  const inFlight = new Map(ids.map((id) => [id, 0]));
  const holders = new Set<string>();
  const reasons: string[] = [];
  let widestGap = 0;
  for (let i = 0; i < count; i++) {
    const engines = ids.map((id) => engine(id, { inFlight: inFlight.get(id), pendingPrefillTokens: opts.pendingPrefillTokens }));
    const decision = pipeline.route(makeRequest(holders), engines)!;
    const id = decision.engine.spec.id;
    inFlight.set(id, inFlight.get(id)! + 1);
    holders.add(id);
    reasons.push(decision.reason!);
    widestGap = Math.max(widestGap, Math.max(...inFlight.values()) - Math.min(...inFlight.values()));
  }
  return { inFlight: [...inFlight.values()], reasons, widestGap };
}

const routeOnce = (req: RequestFeatures, engines: EngineSnapshot[], seed = 1) =>
  createPipeline({ policy: 'prefix-cache-v1' }, { rng: createRng(seed) }).route(req, engines)!;

describe('prefix-cache-v1 scorer', () => {
  it('scores 1 - (cost - min cost) / LOCALITY, cost = queued work + LOCALITY x share of the prompt missing', () => {
    // a holds the whole prompt, b half, c nothing and has 4 requests in flight: costs 0, LOCALITY / 2, 4 + LOCALITY.
    const scores = prefixCacheScorer.score(request({ prefix: prefix(10, { a: 10, b: 5 }) }), [
      engine('a'),
      engine('b'),
      engine('c', { inFlight: 4 }),
    ]);
    expect(scores).toEqual([1, 0.5, 0]);
  });

  it('prefers the engine holding the prompt up to LOCALITY more requests in flight, not beyond', () => {
    const req = request({ prefix: prefix(20, { a: 20 }) });
    expect(routeOnce(req, [engine('a', { inFlight: LOCALITY - 1 }), engine('b')]).engine.spec.id).toBe('a');
    expect(routeOnce(req, [engine('a', { inFlight: LOCALITY + 1 }), engine('b')]).engine.spec.id).toBe('b');
  });

  it('counts queued prefill in prompts like this one when the gateway reports pending tokens', () => {
    // 1,000-token prompt held by a: a may have up to LOCALITY x 1,000 more tokens of prefill queued.
    const req = request({ prefix: prefix(15, { a: 15 }), promptTokens: 1000 });
    const fleet = (pendingA: number) => [engine('a', { pendingPrefillTokens: pendingA }), engine('b', { pendingPrefillTokens: 0 })];
    expect(routeOnce(req, fleet((LOCALITY - 1) * 1000)).engine.spec.id).toBe('a');
    expect(routeOnce(req, fleet((LOCALITY + 1) * 1000)).engine.spec.id).toBe('b');
    // Tokens, not request counts: one 100K-token prompt queued on a outweighs three small ones on b.
    const miss = request({ prefix: prefix(78, {}), promptTokens: 5000 });
    const engines = [engine('a', { inFlight: 1, pendingPrefillTokens: 100_000 }), engine('b', { inFlight: 3, pendingPrefillTokens: 3000 })];
    expect(routeOnce(miss, engines).engine.spec.id).toBe('b');
    // Without pending tokens from every candidate it falls back to counting requests.
    expect(routeOnce(miss, [engine('a', { inFlight: 1, pendingPrefillTokens: 100_000 }), engine('b', { inFlight: 3 })]).engine.spec.id).toBe('a');
  });

  it('failure mode 1: a system prompt in every request does not pull the traffic onto one engine', () => {
    // 100-block prompts whose first 80 blocks are one system prompt; the rest is each user's own.
    const { inFlight, reasons, widestGap } = burst(200, (holders) =>
      request({ prefix: prefix(100, Object.fromEntries([...holders].map((id) => [id, 80]))) }),
    );
    // The first engine to hold it attracts requests only until LOCALITY x 0.8 more are queued there; then the next
    // takes it; once most engines hold it, it counts as held everywhere and load decides.
    expect(widestGap).toBeLessThanOrEqual(Math.ceil(LOCALITY * 0.8));
    expect(inFlight).toEqual([50, 50, 50, 50]);
    expect(reasons.slice(0, 4)).toContain('prefix-hit');
    expect(reasons.slice(-100).every((r) => r === 'prefix-shared')).toBe(true);
  });

  it('failure mode 1, with token counts: a cheap cached prefix does not let a decode batch grow without bound', () => {
    // 7,000-token prompts, 88% a shared system prompt, prefills done (nothing pending): only the requests in flight
    // weigh, IN_FLIGHT_TOKENS each, so the first holder leads by at most LOCALITY x 0.88 x 7,000 / 1,000 requests.
    const { inFlight, widestGap } = burst(
      400,
      (holders) => request({ promptTokens: 7000, prefix: prefix(100, Object.fromEntries([...holders].map((id) => [id, 88]))) }),
      { pendingPrefillTokens: 0 },
    );
    expect(widestGap).toBeLessThanOrEqual(Math.ceil((LOCALITY * 0.88 * 7000) / IN_FLIGHT_TOKENS));
    expect(Math.max(...inFlight) - Math.min(...inFlight)).toBeLessThanOrEqual(1);
  });

  it('counts a prefix held by most candidates as held by all', () => {
    // a, b and c hold 80 of 100 blocks, d nothing: d is not penalised for the 80 and, idle, gets the request.
    const req = request({ prefix: prefix(100, { a: 80, b: 80, c: 80 }) });
    const decision = routeOnce(req, [engine('a', { inFlight: 1 }), engine('b', { inFlight: 1 }), engine('c', { inFlight: 1 }), engine('d')]);
    expect(decision.engine.spec.id).toBe('d');
    expect(decision.reason).toBe('prefix-shared');
    // Held by two of four is not a majority: the holders keep their edge.
    const two = routeOnce(request({ prefix: prefix(100, { a: 80, b: 80 }) }), [engine('a', { inFlight: 1 }), engine('b', { inFlight: 1 }), engine('c'), engine('d')]);
    expect(['a', 'b']).toContain(two.engine.spec.id);
    expect(two.reason).toBe('prefix-hit');
  });

  it('failure mode 2: misses spread over the engines by load, ties broken at random', () => {
    const { inFlight } = burst(400, () => request({ prefix: prefix(30, {}) }));
    expect(inFlight).toEqual([100, 100, 100, 100]);
    const miss = request({ prefix: prefix(30, {}) });
    expect(routeOnce(miss, [engine('a', { inFlight: 3 }), engine('b', { inFlight: 1 }), engine('c', { inFlight: 2 })]).engine.spec.id).toBe('b');
    const idle = [engine('a'), engine('b'), engine('c'), engine('d')];
    const firstPicks = new Set(Array.from({ length: 40 }, (_, seed) => routeOnce(miss, idle, seed).engine.spec.id));
    expect(firstPicks.size).toBe(4);
  });

  it('failure mode 3: one overloaded engine loses its own affinity only', () => {
    // a is swamped and holds prompt X; b holds prompt Y and is moderately busy; c and d are nearly idle.
    const engines = [engine('a', { inFlight: 40 }), engine('b', { inFlight: 4 }), engine('c', { inFlight: 1 }), engine('d', { inFlight: 1 })];
    const y = routeOnce(request({ prefix: prefix(50, { b: 50 }) }), engines);
    expect(y.engine.spec.id).toBe('b');
    expect(y.reason).toBe('prefix-hit');
    const x = routeOnce(request({ prefix: prefix(50, { a: 50 }) }), engines);
    expect(['c', 'd']).toContain(x.engine.spec.id);
    expect(x.reason).toBe('prefix-overloaded');
  });

  it('failure mode 4: an engine that evicted the prefix, or is unhealthy, is not preferred', async () => {
    const index = new LocalPrefixIndex({ maxEntries: 10_000 });
    const hashes = Array.from({ length: 40 }, (_, i) => BigInt(1000 + i));
    index.recordStored('a', hashes);
    const engines = [engine('a', { inFlight: 2 }), engine('b', { inFlight: 1 })];
    const before = routeOnce(request({ prefix: { totalBlocks: 40, matches: await index.match(hashes) } }), engines);
    expect(before.engine.spec.id).toBe('a');
    expect(before.reason).toBe('prefix-hit');

    // A BlockRemoved event for the prompt's first blocks: the chain breaks at block 0, a holds nothing of it.
    index.recordRemoved('a', hashes.slice(0, 4));
    const after = routeOnce(request({ prefix: { totalBlocks: 40, matches: await index.match(hashes) } }), engines);
    expect(after.engine.spec.id).toBe('b');
    expect(after.reason).toBe('miss-least-loaded');

    index.recordStored('a', hashes);
    const down = routeOnce(request({ prefix: { totalBlocks: 40, matches: await index.match(hashes) } }), [
      engine('a', { healthy: false }),
      engine('b', { inFlight: 9 }),
    ]);
    expect(down.engine.spec.id).toBe('b');
    expect(down.candidates).toBe(1);
  });

  it('without prefix features it is least-request', () => {
    const decision = routeOnce(request(), [engine('a', { inFlight: 2 }), engine('b', { inFlight: 1 })]);
    expect(decision.engine.spec.id).toBe('b');
    expect(decision.reason).toBe('miss-least-loaded');
  });

  it('only the part of the prefix not held by every candidate counts', () => {
    // All hold 60 of 100 blocks; a also holds the next 30. a's edge is 0.3 x LOCALITY = 2.4 requests.
    const req = request({ prefix: prefix(100, { a: 90, b: 60, c: 60 }) });
    expect(routeOnce(req, [engine('a', { inFlight: 2 }), engine('b'), engine('c')]).engine.spec.id).toBe('a');
    expect(routeOnce(req, [engine('a', { inFlight: 3 }), engine('b'), engine('c')]).engine.spec.id).not.toBe('a');
  });
});
