import type { Scorer } from '../types.js';

/**
 * Share of the score given to the waiting queue. KV usage is scraped on an interval, so differences of a
 * point or so between engines are noise; within that band the engine with fewer waiting requests wins.
 * Idle engines all read 0 KV usage, so there the queue is what separates them.
 */
const WAITING_WEIGHT = 0.01;

/**
 * Lower scraped KV-cache usage scores higher: 1 - kvUsage, kept absolute rather than min-max normalised (as
 * llm-d's kv-cache-utilization scorer) so that 50% vs 51% stays a small difference when combined with other
 * scorers. The waiting queue, min-max normalised over scraped candidates, decides near-ties (WAITING_WEIGHT).
 *
 * An engine not scraped yet gets the mean score of the scraped candidates, so it neither attracts a burst
 * nor is starved until its first scrape; with no scraped candidate all score 0.5.
 */
export const leastKvCacheScorer: Scorer = {
  name: 'least-kv-cache',
  score: (_request, engines) => {
    let minWaiting = Infinity;
    let maxWaiting = -Infinity;
    for (const e of engines) {
      if (e.load === undefined) continue;
      if (e.load.waiting < minWaiting) minWaiting = e.load.waiting;
      if (e.load.waiting > maxWaiting) maxWaiting = e.load.waiting;
    }
    const range = maxWaiting - minWaiting;
    const scores = new Array<number>(engines.length);
    let known = 0;
    let sum = 0;
    for (let i = 0; i < engines.length; i++) {
      const load = engines[i].load;
      if (load === undefined) continue;
      const waiting = range === 0 ? 1 : (maxWaiting - load.waiting) / range;
      const score = (1 - WAITING_WEIGHT) * (1 - load.kvUsage) + WAITING_WEIGHT * waiting;
      scores[i] = score;
      sum += score;
      known++;
    }
    if (known < engines.length) {
      const neutral = known === 0 ? 0.5 : sum / known;
      for (let i = 0; i < engines.length; i++) if (engines[i].load === undefined) scores[i] = neutral;
    }
    return scores;
  },
};
