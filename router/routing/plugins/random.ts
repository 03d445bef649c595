import type { Picker } from '../types.js';

/** Picks uniformly at random, ignoring scores. */
export function randomPicker(rng: () => number): Picker {
  return {
    name: 'random',
    // min() guards an rng that returns 1, which Math.random never does but an injected one may.
    pick: (_request, engines) => engines[Math.min(engines.length - 1, Math.floor(rng() * engines.length))],
  };
}
