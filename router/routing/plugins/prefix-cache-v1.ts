import type { EngineSnapshot } from '../../../core/engine.js';
import type { RequestFeatures, Scorer } from '../types.js';
import { lastCall, matchedBlocks } from './common.js';
import { queuedWork } from './queued-work.js';

/**
 * prefix-cache-v1 scorer, the default before the latency model (prefix-cache.ts), kept for comparison: the engine where the request would wait least, counting the part of its prompt the engine
 * would have to compute at LOCALITY times its cost. Per candidate e, in units of the request's own prompt:
 *
 *   m_e      leading blocks of the prompt e holds, of T (request.prefix, from the KV index)
 *   m_maj    the longest match a majority of the candidates hold: the (floor(n / 2) + 1)-th longest m_e
 *   u_e      1 - max(m_e, m_maj) / T    share of the prompt e lacks, counting what most engines hold as held
 *   load_e   queued work on e           pending prefill (+ a little per request in flight) / promptTokens, or
 *                                       requests in flight when the gateway does not count tokens (queued-work.ts)
 *   cost_e   load_e + LOCALITY * u_e
 *   score_e  max(0, 1 - (cost_e - min cost) / LOCALITY)
 *
 * So the cheapest candidate scores 1, and one whose extra cost equals a whole prompt's locality scores 0; the
 * max-score picker breaks ties at random. How the failure modes reported against peers' policies are avoided:
 *
 * 1. Hot spot on a shared prefix (one system prompt in every request): only differences of cost count, and a
 *    prefix most candidates hold counts as held by all (m_maj), so it pulls nowhere once it is on most engines,
 *    and the last ones get it by load. Before that, the engines holding it attract requests only until their
 *    queue is LOCALITY x (its share of the prompt) longer than the others'; in-flight requests weigh in that queue
 *    even when their prefill is done, so a decode batch cannot grow without bound behind a cheap cached prefix.
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
 * recomputes its history on both. Measured with the replayer, 4 engines (bench/replay/README.md): on the Mooncake
 * trace at rate x1.6, 2 and 4 lose hits to load-driven moves (18.4% and 19.5-19.9% of prompt tokens against 20.3%,
 * the perfect-partitioning reference being 21.6%) and have a higher p99 TTFT; 16 hits as often but lets the
 * engines holding a shared system prompt queue up (one runs 1.7x the mean of requests in flight on the
 * shared-system-prompt trace).
 */
export const LOCALITY = 8;

interface Costs {
  readonly cost: number[];
  /** max(m_e, m_maj) per candidate, and m_maj. */
  readonly held: number[];
  readonly majority: number;
  readonly minCost: number;
}

// Remembered for explain(), which follows score() in the same decision.
const costs = lastCall((request: RequestFeatures, engines: readonly EngineSnapshot[]): Costs => {
  const total = request.prefix?.totalBlocks ?? 0;
  const load = queuedWork(request, engines);
  const held = engines.map((e) => matchedBlocks(request, e.spec.id));
  // Blocks a majority of the candidates hold: the (floor(n / 2) + 1)-th longest match.
  const majority = [...held].sort((a, b) => b - a)[Math.floor(engines.length / 2)];
  let minCost = Infinity;
  const effective = held.map((m) => Math.max(m, majority));
  const cost = engines.map((_, i) => {
    const c = load[i] + LOCALITY * (total === 0 ? 1 : 1 - effective[i] / total);
    if (c < minCost) minCost = c;
    return c;
  });
  return { cost, held: effective, majority, minCost };
});

export const prefixCacheV1Scorer: Scorer = {
  name: 'prefix-cache-v1',
  score: (request, engines) => {
    const { cost, minCost } = costs(request, engines);
    return cost.map((c) => Math.max(0, 1 - (c - minCost) / LOCALITY));
  },
  /**
   * `prefix-hit`: the chosen engine holds the longest match, longer than what most candidates hold;
   * `prefix-overloaded`: another candidate held more of the prompt but was too busy for it to pay;
   * `prefix-shared`: no candidate held more than most do, and most hold part of the prompt, so load decided;
   * `miss-least-loaded`: no candidate held more than most do, and most hold nothing, so load decided.
   */
  explain: (request, engines, chosen) => {
    const { held, majority } = costs(request, engines);
    const most = Math.max(...held);
    if (most === majority) return majority > 0 ? 'prefix-shared' : 'miss-least-loaded';
    return held[engines.indexOf(chosen)] === most ? 'prefix-hit' : 'prefix-overloaded';
  },
};
