import type { Picker } from '../types.js';

/** Picks uniformly at random, ignoring scores. */
export function randomPicker(rng: () => number): Picker {
  return { name: 'random', pick: (_request, engines) => randomOf(rng, engines) };
}

/** One of `items` (not empty), uniformly at random. */
export function randomOf<T>(rng: () => number, items: readonly T[]): T {
  // min() guards an rng that returns 1, which Math.random never does but an injected one may.
  return items[Math.min(items.length - 1, Math.floor(rng() * items.length))]!;
}
