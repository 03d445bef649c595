import type { EngineSnapshot } from '../../../core/engine.js';
import type { Picker, RequestFeatures } from '../types.js';

/** Leading blocks of the request's prompt the engine holds, as the index says, at most the prompt's; 0 without prefix features. */
export function matchedBlocks(request: RequestFeatures, engineId: string): number {
  const total = request.prefix?.totalBlocks ?? 0;
  return total === 0 ? 0 : Math.min(total, request.prefix!.matches.get(engineId) ?? 0);
}

/**
 * `fn` remembering its last answer: a scorer's explain() is called with the very request and candidates its
 * score() just saw, in the same routing decision, and need not compute them again.
 */
export function lastCall<T>(fn: (request: RequestFeatures, engines: readonly EngineSnapshot[]) => T): typeof fn {
  let last: { request: RequestFeatures; engines: readonly EngineSnapshot[]; value: T } | undefined;
  return (request, engines) => {
    if (last?.request !== request || last.engines !== engines) last = { request, engines, value: fn(request, engines) };
    return last.value;
  };
}

/**
 * A picker whose decision carries its reason, which explain() gives back for that decision (the peers' emulated
 * policies decide and explain in one go).
 */
export function explainedPicker(
  name: string,
  decide: (request: RequestFeatures, engines: readonly EngineSnapshot[]) => { readonly engine: EngineSnapshot; readonly reason: string },
): Picker {
  let last: { request: RequestFeatures; engine: EngineSnapshot; reason: string } | undefined;
  return {
    name,
    pick: (request, engines) => {
      const { engine, reason } = decide(request, engines);
      last = { request, engine, reason };
      return engine;
    },
    explain: (request, _engines, chosen) => (last?.request === request && last.engine === chosen ? last.reason : undefined),
  };
}
