import { describe, expect, it } from 'vitest';
import { createRng } from '../../../core/hash.js';
import { createPipeline } from '../../../router/routing/pipeline.js';
import type { RequestFeatures } from '../../../router/routing/types.js';
import { engine, prefix, request } from './fixtures.js';

/**
 * The peers' policies, from their published sources (see the pickers' files): each case gives the engines' requests
 * in flight and prefix matches (blocks of 100), and the engines the published algorithm may choose.
 */
interface Case {
  readonly name: string;
  readonly inFlight: readonly number[];
  readonly held: readonly number[];
  readonly expect: readonly string[];
  readonly reason: string;
}

const ids = ['a', 'b', 'c', 'd'];

function decide(policy: 'aibrix-prefix-cache' | 'sglang-cache-aware', c: Case, seed: number) {
  const engines = ids.map((id, i) => engine(id, { inFlight: c.inFlight[i] }));
  const held = Object.fromEntries(ids.map((id, i) => [id, c.held[i]]).filter(([, m]) => (m as number) > 0));
  return createPipeline({ policy }, { rng: createRng(seed) }).route(request({ prefix: prefix(100, held) }), engines)!;
}

function table(policy: 'aibrix-prefix-cache' | 'sglang-cache-aware', cases: readonly Case[]) {
  for (const c of cases) {
    it(c.name, () => {
      for (let seed = 0; seed < 20; seed++) {
        const decision = decide(policy, c, seed);
        expect(c.expect).toContain(decision.engine.spec.id);
        expect(decision.reason).toBe(c.reason);
        expect(decision.policy).toBe(policy);
      }
    });
  }
}

describe('aibrix-prefix-cache emulation', () => {
  table('aibrix-prefix-cache', [
    {
      name: 'max - min running > 8: the least loaded, whatever the prefix',
      inFlight: [10, 1, 5, 5],
      held: [100, 0, 0, 0],
      expect: ['b'],
      reason: 'imbalance-least-loaded',
    },
    {
      // mean 6, sample stddev 4: bound 10.
      name: 'max - min = 8 is not imbalanced: the best match within mean + stddev',
      inFlight: [8, 0, 8, 8],
      held: [100, 0, 0, 0],
      expect: ['a'],
      reason: 'prefix-hit',
    },
    {
      // mean 4.75, sample stddev 3.5: bound 8.25, so c (9 running, best match) is skipped for d (next best).
      name: 'a matched pod above mean + 1 sample stddev is skipped for the next best match',
      inFlight: [3, 1, 9, 6],
      held: [0, 10, 90, 60],
      expect: ['d'],
      reason: 'prefix-hit',
    },
    {
      name: 'equal match percent: fewer running requests first',
      inFlight: [4, 2, 3, 0],
      held: [50, 50, 50, 0],
      expect: ['b'],
      reason: 'prefix-hit',
    },
    {
      // mean 2, sample stddev 4: bound 6, and a (the only match) runs 8.
      name: 'every matched pod above the bound: the least loaded',
      inFlight: [8, 0, 0, 0],
      held: [100, 0, 0, 0],
      expect: ['b', 'c', 'd'],
      reason: 'prefix-overloaded',
    },
    {
      name: 'match percent is floor(100 x matched / blocks): under 1% is no match',
      inFlight: [2, 1, 1, 3],
      held: [0.9, 0, 0, 0],
      expect: ['b', 'c'],
      reason: 'miss-least-loaded',
    },
  ]);

  it('one overloaded pod switches affinity off for every request (the guard is fleet-wide)', () => {
    // The case prefix-cache keeps (see prefix-cache.test.ts, failure mode 3): b holds the prompt, a is swamped.
    const c: Case = { name: '', inFlight: [40, 4, 1, 1], held: [0, 100, 0, 0], expect: ['c', 'd'], reason: 'imbalance-least-loaded' };
    expect(c.expect).toContain(decide('aibrix-prefix-cache', c, 1).engine.spec.id);
  });
});

describe('sglang-cache-aware emulation', () => {
  table('sglang-cache-aware', [
    {
      name: 'max - min > 32 and max > 1.1 x min: the least loaded, whatever the prefix',
      inFlight: [40, 5, 6, 7],
      held: [100, 0, 0, 0],
      expect: ['b'],
      reason: 'imbalance-least-loaded',
    },
    {
      name: 'max - min > 32 but max <= 1.1 x min is balanced: the best match',
      inFlight: [400, 367, 370, 380],
      held: [100, 0, 0, 0],
      expect: ['a'],
      reason: 'prefix-hit',
    },
    {
      name: 'match ratio > 0.5: the engine with the longest match, however busy within the guard',
      inFlight: [30, 0, 0, 0],
      held: [51, 20, 0, 0],
      expect: ['a'],
      reason: 'prefix-hit',
    },
    {
      name: 'match ratio 0.5 is not above the threshold: the smallest tree (all empty: any)',
      inFlight: [0, 0, 0, 0],
      held: [50, 0, 0, 0],
      expect: ['a', 'b', 'c', 'd'],
      reason: 'miss-smallest-cache',
    },
  ]);

  it('sends misses to the engine with the least text in its tree, not the least loaded', () => {
    const pipeline = createPipeline({ policy: 'sglang-cache-aware' }, { rng: createRng(5) });
    const engines = ids.map((id) => engine(id));
    const sizes = [40, 10, 30, 20];
    // Fill the trees: each miss inserts its whole prompt into the chosen (smallest) engine's tree.
    const picks = sizes.map((blocks) => pipeline.route(request({ prefix: prefix(blocks, {}) }), engines)!.engine.spec.id);
    expect(new Set(picks).size).toBe(4);
    const smallest = picks[sizes.indexOf(10)];
    const busy = engines.map((e) => (e.spec.id === smallest ? engine(e.spec.id, { inFlight: 20 }) : e));
    expect(pipeline.route(request({ prefix: prefix(5, {}) }), busy)!.engine.spec.id).toBe(smallest);
  });

  it('piles a shared system prompt onto one engine until its fleet-wide guard trips (the hot spot prefix-cache avoids)', () => {
    const pipeline = createPipeline({ policy: 'sglang-cache-aware' }, { rng: createRng(7) });
    const inFlight = new Map(ids.map((id) => [id, 0]));
    const holders = new Set<string>();
    const picks: string[] = [];
    for (let i = 0; i < 40; i++) {
      const req: RequestFeatures = request({ prefix: prefix(100, Object.fromEntries([...holders].map((id) => [id, 80]))) });
      const id = pipeline.route(req, ids.map((e) => engine(e, { inFlight: inFlight.get(e) })))!.engine.spec.id;
      inFlight.set(id, inFlight.get(id)! + 1);
      holders.add(id);
      picks.push(id);
    }
    // 80% > the 0.5 threshold: the first holder takes everything until it runs 33 more than the idlest.
    // prefix-cache spreads the same burst after about LOCALITY x 0.8 requests (prefix-cache.test.ts, failure mode 1).
    expect(new Set(picks.slice(0, 33)).size).toBe(1);
    expect(picks[33]).not.toBe(picks[0]);
  });
});
