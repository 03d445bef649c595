import type { EngineSnapshot } from '../../../core/engine.js';
import type { Picker } from '../types.js';

/**
 * Takes turns, ignoring scores. The cursor is the id of the engine picked last, and the next pick is the
 * candidate with the smallest id after it, wrapping around to the smallest. Why ids and not an index: the
 * candidate list changes between calls (an engine turns unhealthy, a retry excludes one), and an index into
 * a changed list would skip or repeat engines; with ids each candidate still gets its turn in a fixed order.
 * One cursor per model, because different models have different candidates: with a shared cursor, one
 * model's picks would decide where the other model's rotation resumes.
 */
export function roundRobinPicker(): Picker {
  const lastByModel = new Map<string, string>();
  return {
    name: 'round-robin',
    pick: (request, engines) => {
      const last = lastByModel.get(request.model);
      let lowest = engines[0];
      let after: EngineSnapshot | undefined;
      for (const e of engines) {
        const id = e.spec.id;
        if (id < lowest.spec.id) lowest = e;
        if (last !== undefined && id > last && (after === undefined || id < after.spec.id)) after = e;
      }
      const pick = after ?? lowest;
      lastByModel.set(request.model, pick.spec.id);
      return pick;
    },
  };
}
