import type { EngineSnapshot } from '../../../core/engine.js';
import type { RequestFeatures, Scorer } from '../types.js';
import { queuedWork } from './queued-work.js';

/**
 * prefix-cache scorer: the engine where the request would wait least, counting the part of its prompt the engine
 * would have to compute at LOCALITY times its cost. Per candidate e, in units of the request's own prompt:
 *
 *   u_e      1 - m_e / T            share of the prompt e lacks (T blocks, m_e leading ones held: request.prefix)
 *   load_e   queued work on e       pendingPrefillTokens / promptTokens, else requests in flight (queued-work.ts)
 *   cost_e   load_e + LOCALITY * u_e
 *   score_e  max(0, 1 - (cost_e - min cost) / LOCALITY)
 *
 * So the cheapest candidate scores 1, and one whose extra cost equals a whole prompt's locality scores 0; the
 * max-score picker breaks ties at random. How the failure modes reported against peers' policies are avoided:
 *
 * 1. Hot spot on a shared prefix (one system prompt in every request): only differences of cost count, so a
 *    prefix every candidate holds pulls nowhere; while only some engines hold it, they attract requests until
 *    their queue is LOCALITY x (the prefix's share of a prompt) longer than the others', after which the others
 *    get requests (and the prefix) too. Affinity is capped by each candidate's own load, never unbounded.
 * 2. Misses piling onto one engine: a miss costs the same LOCALITY everywhere, so the least loaded wins, and
 *    equal loads are a tie the picker breaks at random.
 * 3. One overloaded engine switching affinity off for everyone (AIBrix's and SGLang's guard compares the fleet's
 *    max and min load and, when tripped, sends every request to the least loaded): load enters each candidate's
 *    own cost, so only the busy engine loses its pull; requests whose prefix lives elsewhere keep their affinity.
 * 4. Stale affinity: an engine that evicted the prefix no longer matches in the index (KV events remove it), so
 *    it has no advantage; an unhealthy engine never reaches the scorer (the healthy filter always runs).
 *
 * In-flight and pending tokens are the gateway's own exact, current counts; scraped load is up to an interval old,
 * and a burst of requests sharing a prefix arrives well within one interval.
 */

/**
 * A prompt computed on an engine that does not hold it costs LOCALITY times its own prefill. More than 1 because
 * placing a prefix also decides where the next requests sharing it hit: a conversation split over two engines
 * recomputes its history on both. Measured on the Mooncake trace, 4 engines, rate x1.6 (bench/replay/README.md):
 * 2 loses a third of the hits to load-driven moves, 4 a tenth; 8 and 16 keep them (20% of prompt tokens, the
 * perfect-partitioning reference being 21.6%) with the same TTFT. 8, not 16, because it also bounds how far a
 * hot prefix may queue up on the engines holding it (failure mode 1) before others take it.
 */
export const LOCALITY = 8;

interface Costs {
  readonly cost: number[];
  readonly held: number[];
  readonly minCost: number;
}

function costs(request: RequestFeatures, engines: readonly EngineSnapshot[]): Costs {
  const total = request.prefix?.totalBlocks ?? 0;
  const load = queuedWork(request, engines);
  let minCost = Infinity;
  const held = engines.map((e) => (total === 0 ? 0 : Math.min(total, request.prefix!.matches.get(e.spec.id) ?? 0)));
  const cost = engines.map((_, i) => {
    const c = load[i] + LOCALITY * (total === 0 ? 1 : 1 - held[i] / total);
    if (c < minCost) minCost = c;
    return c;
  });
  return { cost, held, minCost };
}

export const prefixCacheScorer: Scorer = {
  name: 'prefix-cache',
  score: (request, engines) => {
    const { cost, minCost } = costs(request, engines);
    return cost.map((c) => Math.max(0, 1 - (c - minCost) / LOCALITY));
  },
  /**
   * `prefix-hit`: the chosen engine holds the longest match, longer than some other candidate's;
   * `prefix-overloaded`: another candidate held more of the prompt but was too busy for it to pay;
   * `miss-least-loaded`: every candidate held as much (often nothing), so load decided.
   */
  explain: (request, engines, chosen) => {
    const { held } = costs(request, engines);
    const most = Math.max(...held);
    if (most === Math.min(...held)) return 'miss-least-loaded';
    return held[engines.indexOf(chosen)] === most ? 'prefix-hit' : 'prefix-overloaded';
  },
};
