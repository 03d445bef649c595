import type { EngineSnapshot } from '../../../core/engine.js';
import type { Picker, RequestFeatures } from '../types.js';
import { explainedPicker, matchedBlocks } from './common.js';
import { randomOf } from './random.js';

/**
 * Emulation of AIBrix's `prefix-cache` routing algorithm, for comparison in the replayer (and selectable in
 * config): vllm-project/aibrix, pkg/plugins/gateway/algorithms/prefix_cache.go, the release whose imbalance guard
 * is AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT (the algorithm its README documents; later
 * versions gate on max > 2 * (mean + 1) as well and restrict matching to the least loaded pods instead):
 *
 * 1. Imbalance guard, fleet-wide: if max - min of the pods' running requests > 8, route to a pod with the
 *    fewest (random among them), whatever the prefix.
 * 2. Otherwise, pods with a prefix match (percent = floor(100 * matched blocks / blocks), > 0) are shuffled, then
 *    sorted by percent descending and running requests ascending; the first whose running requests are
 *    <= mean + 1 * stddev (over all ready pods; Go's standardDeviation divides by n - 1) wins.
 * 3. No match, or every matched pod above that bound: the pod with the fewest running requests.
 *
 * AIBrix counts running requests at its gateway, so this reads `inFlight`. Its prefix table is fed with the
 * prompt's hashes for the chosen pod, as Switchyard's index is by the router's decisions.
 */
export const IMBALANCE_ABS_COUNT = 8;
export const STDDEV_FACTOR = 1;

export function aibrixPrefixCachePicker(rng: () => number): Picker {
  function leastLoaded(engines: readonly EngineSnapshot[]): EngineSnapshot {
    let min = Infinity;
    for (const e of engines) if (e.inFlight < min) min = e.inFlight;
    const least = engines.filter((e) => e.inFlight === min);
    return randomOf(rng, least);
  }

  return explainedPicker('aibrix-prefix-cache', (request: RequestFeatures, engines: readonly EngineSnapshot[]) => {
    let min = Infinity;
    let max = -Infinity;
    let sum = 0;
    for (const e of engines) {
      min = Math.min(min, e.inFlight);
      max = Math.max(max, e.inFlight);
      sum += e.inFlight;
    }
    if (max - min > IMBALANCE_ABS_COUNT) return { engine: leastLoaded(engines), reason: 'imbalance-least-loaded' };

    const total = request.prefix?.totalBlocks ?? 0;
    const matched: { engine: EngineSnapshot; percent: number }[] = [];
    for (const engine of engines) {
      const blocks = matchedBlocks(request, engine.spec.id);
      const percent = Math.floor((blocks * 100) / Math.max(1, total));
      if (percent > 0) matched.push({ engine, percent });
    }
    if (matched.length === 0) return { engine: leastLoaded(engines), reason: 'miss-least-loaded' };

    const mean = sum / engines.length;
    let squares = 0;
    for (const e of engines) squares += (e.inFlight - mean) ** 2;
    const stddev = engines.length > 1 ? Math.sqrt(squares / (engines.length - 1)) : 0;
    const bound = mean + STDDEV_FACTOR * stddev;

    // Fisher-Yates, as Go's rand.Shuffle, then a stable sort: equal pods keep the shuffled order.
    for (let i = matched.length - 1; i > 0; i--) {
      const j = Math.min(i, Math.floor(rng() * (i + 1)));
      [matched[i], matched[j]] = [matched[j], matched[i]];
    }
    matched.sort((a, b) => b.percent - a.percent || a.engine.inFlight - b.engine.inFlight);
    const target = matched.find((m) => m.engine.inFlight <= bound);
    if (target !== undefined) return { engine: target.engine, reason: 'prefix-hit' };
    return { engine: leastLoaded(engines), reason: 'prefix-overloaded' };
  });
}
