import type { EngineSnapshot } from '../../../core/engine.js';
import type { Picker, RequestFeatures } from '../types.js';
import { explainedPicker, matchedBlocks } from './common.js';
import { randomOf } from './random.js';

/**
 * Emulation of the SGLang router's `cache_aware` policy, for comparison in the replayer (and selectable in config):
 * sgl-project/sglang, sgl-router/src/policies/cache_aware.rs (select_worker), with the library defaults of
 * CacheAwareConfig in sgl-router/src/policies/mod.rs (cache_threshold 0.5, balance_abs_threshold 32,
 * balance_rel_threshold 1.1):
 *
 * 1. Imbalance guard, fleet-wide: if max - min load > 32 and max > 1.1 * min, route to the least loaded worker
 *    (the first of them, as Rust's min_by_key), whatever the prefix.
 * 2. Otherwise the worker with the longest prefix match in the router's approximate radix tree; if that match
 *    covers more than 0.5 of the prompt, route there (ties between workers holding the same match are broken
 *    at random here; SGLang takes the first tenant of a hash map, which is as arbitrary).
 * 3. Else the "smallest tenant": the worker with the least text in the tree, i.e. the most free cache as the
 *    router sees it (random among equals here, again for SGLang's hash-map order).
 * Every decision inserts the prompt into the chosen worker's tree, adding the part it did not hold yet.
 *
 * Mapping: SGLang's load is the router's own count of requests in flight per worker, so `inFlight`; its match
 * ratio is over characters, here over the index's blocks; tree sizes are kept by this picker, in blocks, per
 * model, as SGLang keeps one tree per model. SGLang evicts its tree's least recently used leaves down to
 * max_tree_size (the CLI default 2^26 characters, ~16M tokens per worker); the replayed traces stay below that, so
 * sizes only grow here.
 */
export const CACHE_THRESHOLD = 0.5;
export const BALANCE_ABS_THRESHOLD = 32;
export const BALANCE_REL_THRESHOLD = 1.1;

export function sglangCacheAwarePicker(rng: () => number): Picker {
  const treeBlocksByModel = new Map<string, Map<string, number>>();

  function decide(request: RequestFeatures, engines: readonly EngineSnapshot[], tree: Map<string, number>): { engine: EngineSnapshot; reason: string } {
    let least = engines[0];
    let max = -Infinity;
    for (const e of engines) {
      if (e.inFlight < least.inFlight) least = e;
      max = Math.max(max, e.inFlight);
    }
    const min = least.inFlight;
    if (max - min > BALANCE_ABS_THRESHOLD && max > BALANCE_REL_THRESHOLD * min) return { engine: least, reason: 'imbalance-least-loaded' };

    const total = request.prefix?.totalBlocks ?? 0;
    let bestMatch = 0;
    let best: EngineSnapshot[] = [];
    for (const e of engines) {
      const m = matchedBlocks(request, e.spec.id);
      if (m > bestMatch) {
        bestMatch = m;
        best = [e];
      } else if (m === bestMatch && m > 0) {
        best.push(e);
      }
    }
    if (total > 0 && bestMatch / total > CACHE_THRESHOLD) return { engine: randomOf(rng, best), reason: 'prefix-hit' };

    let smallest = Infinity;
    let smallestEngines: EngineSnapshot[] = [];
    for (const e of engines) {
      const size = tree.get(e.spec.id) ?? 0;
      if (size < smallest) {
        smallest = size;
        smallestEngines = [e];
      } else if (size === smallest) {
        smallestEngines.push(e);
      }
    }
    return { engine: randomOf(rng, smallestEngines), reason: 'miss-smallest-cache' };
  }

  return explainedPicker('sglang-cache-aware', (request, engines) => {
    let tree = treeBlocksByModel.get(request.model);
    if (tree === undefined) treeBlocksByModel.set(request.model, (tree = new Map()));
    const decision = decide(request, engines, tree);
    const id = decision.engine.spec.id;
    tree.set(id, (tree.get(id) ?? 0) + (request.prefix?.totalBlocks ?? 0) - matchedBlocks(request, id));
    return decision;
  });
}
