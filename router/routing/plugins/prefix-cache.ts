import type { EngineSnapshot } from '../../../core/engine.js';
import { predictLatency, prefillMs, queuedLoad } from '../engine-model.js';
import type { PluginContext } from '../plugins.js';
import type { RequestFeatures, Scorer } from '../types.js';
import { lastCall, matchedBlocks } from './common.js';

/**
 * prefix-cache scorer: the engine where the request costs least time, its own and everyone's. Per candidate e,
 * in ms, from the engine model (engine-model.ts) with e's calibrated figures:
 *
 *   cost_e = felt(TTFT_e) + decode_e + externality_e + locality_e
 *
 * - TTFT_e: the prefill queued on e, then the part of the prompt e lacks (the index's match), then one step. This
 *   is what a cached prefix buys.
 * - decode_e: the request's output at the step time of e's batch with it added. This is what a crowded engine
 *   costs, and the term whose absence made the shared system prompt a hot spot: there every engine's prefill is
 *   nearly free, and what differs is how long each of 64 tokens waits for the batch's step.
 * - externality_e: what the request costs the requests already on e (its prefill stalls their steps, its KV
 *   lengthens them). Without it the cheapest place for one request can be the worst for the fleet.
 * - locality_e: a prefix is worth keeping where it lives. Computing on e blocks that another candidate holds makes
 *   a second copy, which takes KV that other prefixes then lose. Valued as the prefill time of the duplicated
 *   blocks times a weight that grows with how full e's cache is (the index's fill): on an engine with room, a copy
 *   of a shared system prompt costs nothing later and load decides; on a full one it evicts prefixes that later
 *   requests would have hit.
 *
 * The score is the cheapest cost over the candidate's (1 for the cheapest, in (0, 1]), so weights against other
 * scorers mean shares of time. A request's session (request.sessionEngine) marks its engine as holding at least
 * what any candidate holds, and half the prompt when the index knows nothing (after a restart, or another
 * replica's session): a conversation's history is most of its prompt.
 */

/**
 * How a wait for the first token is felt, against ms of decode or of others' time: a streaming user hardly tells
 * 20 ms from 60, and minds 5 s far more than a slower stream after it. So a TTFT of t weighs
 * t x (1 + (TTFT_WEIGHT - 1) x t / (t + TTFT_FELT_MS)): about 1 for waits well under TTFT_FELT_MS, approaching
 * TTFT_WEIGHT for long ones. A flat 3 kept the Mooncake trace's long prompts from queueing behind each other, and
 * herded a cold burst sharing a system prompt onto the engine whose first prefill ended first (tens of ms ahead of
 * the others'); a flat 1 spread the burst and let the trace's TTFT tail grow by half (bench/replay/README.md).
 */
export const TTFT_WEIGHT = 3;
export const TTFT_FELT_MS = 500;

export function feltTtft(ttftMs: number): number {
  return ttftMs * (1 + ((TTFT_WEIGHT - 1) * ttftMs) / (ttftMs + TTFT_FELT_MS));
}

/**
 * Weight of the prefill time of the blocks a placement would duplicate, on an empty cache and on a full one (the
 * index's fill of the engine, linearly between), in units of TTFT ms before TTFT_WEIGHT. Empty: a copy evicts
 * nothing, so it costs only its own prefill, in the TTFT term; a shared system prompt spreads by load. Full: every
 * block of a copy evicts a block of a prefix that later requests would have hit, and with a working set larger
 * than the caches (the Mooncake trace) each such block is computed many times over; 32 keeps that trace's hit
 * ratio at perfect partitioning's less a few percent.
 */
export const LOCALITY_WEIGHT = { empty: 0, full: 32 } as const;

interface Costs {
  readonly cost: Float64Array;
  readonly held: Float64Array;
  readonly minCost: number;
  readonly mostHeld: number;
}

export function prefixCacheScorer(ctx: PluginContext): Scorer {
  const costs = lastCall((request: RequestFeatures, engines: readonly EngineSnapshot[]): Costs => {
    const n = engines.length;
    const total = request.prefix?.totalBlocks ?? 0;
    const promptTokens = request.promptTokens ?? 0;
    const outputTokens = request.outputTokens ?? 1;
    const held = new Float64Array(n);
    let mostHeld = 0;
    for (let i = 0; i < n; i++) {
      held[i] = matchedBlocks(request, engines[i].spec.id);
      if (held[i] > mostHeld) mostHeld = held[i];
    }
    const sessionAt = request.sessionEngine === undefined ? -1 : engines.findIndex((e) => e.spec.id === request.sessionEngine);
    if (sessionAt >= 0) {
      held[sessionAt] = Math.max(held[sessionAt], mostHeld, Math.floor(total / 2));
      mostHeld = Math.max(mostHeld, held[sessionAt]);
    }
    // The share of the prompt each engine holds; without prefix features, a session's engine still holds half.
    const share = (i: number) => (total === 0 ? (i === sessionAt ? 0.5 : 0) : held[i] / total);
    const mostShare = total === 0 ? (sessionAt >= 0 ? 0.5 : 0) : mostHeld / total;
    let holders = 0;
    for (let i = 0; i < n; i++) if (held[i] === mostHeld) holders++;
    // A copy made now serves about this many of the requests that will share the prefix: its share of them.
    const amortised = 1 + (request.prefix?.recentSharers ?? 0) / (holders + 1);
    const cost = new Float64Array(n);
    let minCost = Infinity;
    for (let i = 0; i < n; i++) {
      const perf = ctx.perf(engines[i]);
      const shape = { promptTokens, uncachedTokens: promptTokens * (1 - share(i)), outputTokens };
      const p = predictLatency(perf, queuedLoad(engines[i], shape), shape);
      const locality = LOCALITY_WEIGHT.empty + (LOCALITY_WEIGHT.full - LOCALITY_WEIGHT.empty) * ctx.cacheFill(engines[i]);
      const copyMs = prefillMs(perf, promptTokens * (mostShare - share(i)));
      // The copy's prefill is in this request's TTFT; spread over the requests that will share it, it costs this one
      // only its part of it, so a hot prefix spreads to engines that do not hold it when their batches are lighter.
      cost[i] = feltTtft(p.ttftMs - copyMs + copyMs / amortised) + p.decodeMs + p.externalityMs + locality * copyMs;
      if (cost[i] < minCost) minCost = cost[i];
    }
    return { cost, held, minCost, mostHeld };
  });

  return {
    name: 'prefix-cache',
    score: (request, engines) => {
      const { cost, minCost } = costs(request, engines);
      return Array.from(cost, (c) => (c > 0 ? minCost / c : 1));
    },
    /**
     * `prefix-hit`: the chosen engine holds the longest match, longer than some other candidate's;
     * `prefix-overloaded`: another candidate held more of the prompt but would have cost more time;
     * `prefix-shared`: every candidate holds as much, so load decided;
     * `miss-least-loaded`: no candidate holds any of it, so load decided.
     */
    explain: (request, engines, chosen) => {
      const { held, mostHeld } = costs(request, engines);
      if (mostHeld === 0) return 'miss-least-loaded';
      if (held[engines.indexOf(chosen)] < mostHeld) return 'prefix-overloaded';
      return held.every((h) => h === mostHeld) ? 'prefix-shared' : 'prefix-hit';
    },
  };
}
