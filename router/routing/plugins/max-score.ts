import type { Picker } from '../types.js';

/** Scores closer than this are a tie: weighted sums of equal inputs can differ in the last bits. */
const TIE_EPSILON = 1e-9;

/**
 * Picks the highest score. Ties are broken uniformly at random (reservoir sampling over the tied engines,
 * one pass, no allocation) so equal engines share the traffic instead of the first one taking it all.
 */
export function maxScorePicker(rng: () => number): Picker {
  return {
    name: 'max-score',
    pick: (_request, engines, scores) => {
      let best = 0;
      let ties = 1;
      for (let i = 1; i < engines.length; i++) {
        const diff = scores[i] - scores[best];
        if (diff > TIE_EPSILON) {
          best = i;
          ties = 1;
        } else if (diff >= -TIE_EPSILON) {
          ties++;
          if (rng() * ties < 1) best = i;
        }
      }
      return engines[best];
    },
  };
}
