import { describe, expect, it } from 'vitest';
import { leastKvCacheScorer } from '../../../router/routing/plugins/least-kv-cache.js';
import { leastRequestScorer } from '../../../router/routing/plugins/least-request.js';
import { engine, request } from './fixtures.js';

describe('least-request scorer', () => {
  it('normalises in-flight counts to [0, 1], fewer is higher', () => {
    const scores = leastRequestScorer.score(request(), [
      engine('a', { inFlight: 10 }),
      engine('b', { inFlight: 2 }),
      engine('c', { inFlight: 6 }),
    ]);
    expect(scores).toEqual([0, 1, 0.5]);
  });

  it('scores equal engines equally', () => {
    expect(leastRequestScorer.score(request(), [engine('a', { inFlight: 3 }), engine('b', { inFlight: 3 })])).toEqual([1, 1]);
  });
});

describe('least-kv-cache scorer', () => {
  it('prefers lower KV usage, keeping the absolute difference', () => {
    const [a, b] = leastKvCacheScorer.score(request(), [
      engine('a', { load: { kvUsage: 0.9 } }),
      engine('b', { load: { kvUsage: 0.2 } }),
    ]);
    expect(b).toBeGreaterThan(a);
    expect(b - a).toBeCloseTo(0.7 * 0.99, 6);
  });

  it('lets the waiting queue break a tie in KV usage', () => {
    const [a, b] = leastKvCacheScorer.score(request(), [
      engine('a', { load: { kvUsage: 0.5, waiting: 4 } }),
      engine('b', { load: { kvUsage: 0.5, waiting: 0 } }),
    ]);
    expect(b).toBeGreaterThan(a);
  });

  it('does not let the queue outweigh a real KV difference', () => {
    const [a, b] = leastKvCacheScorer.score(request(), [
      engine('a', { load: { kvUsage: 0.3, waiting: 9 } }),
      engine('b', { load: { kvUsage: 0.6, waiting: 0 } }),
    ]);
    expect(a).toBeGreaterThan(b);
  });

  it('gives an engine not yet scraped the mean of the scraped ones', () => {
    const scores = leastKvCacheScorer.score(request(), [
      engine('a', { load: { kvUsage: 0.8 } }),
      engine('new'),
      engine('b', { load: { kvUsage: 0.2 } }),
    ]);
    expect(scores[1]).toBeCloseTo((scores[0] + scores[2]) / 2, 12);
    expect(scores[1]).toBeLessThan(scores[2]);
    expect(scores[1]).toBeGreaterThan(scores[0]);
  });

  it('scores all engines the same when none has been scraped', () => {
    expect(leastKvCacheScorer.score(request(), [engine('a'), engine('b')])).toEqual([0.5, 0.5]);
  });
});
