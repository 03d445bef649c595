import type { Scorer } from '../types.js';

/**
 * Fewer requests in flight from this gateway scores higher, min-max normalised over the candidates: the
 * least loaded gets 1, the most loaded 0, and all get 1 when they are equal (as llm-d's queue scorer).
 * In-flight counts are exact and current, unlike scraped load, so this spreads a burst immediately.
 */
export const leastRequestScorer: Scorer = {
  name: 'least-request',
  score: (_request, engines) => {
    let min = Infinity;
    let max = -Infinity;
    for (const e of engines) {
      if (e.inFlight < min) min = e.inFlight;
      if (e.inFlight > max) max = e.inFlight;
    }
    const range = max - min;
    return engines.map((e) => (range === 0 ? 1 : (max - e.inFlight) / range));
  },
};
