import { describe, expect, it } from 'vitest';
import { blockHashes } from '../../../engine-sim/prefix-cache.js';
import { type CacheEvent, type ModelRequest, TimingModel } from '../../../engine-sim/timing-model.js';

// The simulated engine's side of KV events: what its cache reports, step by step, before it is published.

const BLOCK = 4;

function request(id: string, promptTokens: number, outputTokens: number, first: number): ModelRequest {
  const sequence = Array.from({ length: promptTokens + outputTokens }, (_, i) => first + i);
  return { id, promptTokens, outputTokens, blockHashes: blockHashes(sequence, BLOCK) };
}

function model(kvCapacityTokens: number, recordCacheEvents = true): TimingModel {
  return new TimingModel({ blockSize: BLOCK, kvCapacityTokens, maxNumBatchedTokens: 1000 }, { recordCacheEvents });
}

/** Steps until idle, collecting each step's cache events as the engine loop does. */
function runSteps(m: TimingModel): CacheEvent[][] {
  const steps: CacheEvent[][] = [];
  for (let at = 0; !m.idle; ) {
    at += m.step(at).durationMs;
    steps.push([...m.takeCacheEvents()]);
  }
  return steps;
}

const summary = (event: CacheEvent): string =>
  event.type === 'stored' ? `stored ${event.request.id} ${event.fromBlock}-${event.toBlock}` : event.type === 'removed' ? `removed ${event.hash}` : 'cleared';

describe('TimingModel cache events', () => {
  it('reports the blocks a request fills, once per step, as vLLM batches them', () => {
    const m = model(64);
    const a = request('a', 10, 4, 0);
    m.submit(a);
    // Prefill computes 10 tokens: blocks 0-1 full. Decodes then feed back output tokens 11..13 (the last sampled
    // token is never fed back): block 2 fills when token 12 is in, block 3 would need token 16.
    expect(runSteps(m).map((events) => events.map(summary))).toEqual([['stored a 0-2'], [], ['stored a 2-3'], []]);
  });

  it('reports evictions with the evicted block’s hash, and a shared prefix only once', () => {
    const m = model(32); // 8 blocks
    const a = request('a', 16, 1, 0);
    m.submit(a);
    runSteps(m);
    // Same first 8 tokens: blocks 0-1 are hits, not stored again; 2-3 are new and need 2 of the 4 free blocks.
    const b: ModelRequest = { id: 'b', promptTokens: 16, outputTokens: 1, blockHashes: blockHashes([...Array(8).keys(), ...Array.from({ length: 9 }, (_, i) => 100 + i)], BLOCK) };
    m.submit(b);
    expect(runSteps(m).flat().map(summary)).toEqual(['stored b 2-4']);
    // The free queue is now, oldest first: a's output block (never cached), a3, a2, b's output block, b3, b2, then
    // the shared a1, a0 that b released last. A 24-token prompt takes the first 6: four evictions, tails first.
    m.submit(request('c', 24, 1, 1000));
    const events = runSteps(m).flat();
    expect(events.map(summary)).toEqual([
      `removed ${a.blockHashes[3]}`,
      `removed ${a.blockHashes[2]}`,
      `removed ${b.blockHashes[3]}`,
      `removed ${b.blockHashes[2]}`,
      'stored c 0-6',
    ]);
  });

  it('reports the zero-latency path too', () => {
    const m = model(64);
    m.serveInstantly(request('a', 9, 4, 0));
    // 13 tokens, the last never fed back: 12 computed, 3 full blocks.
    expect(m.takeCacheEvents().map(summary)).toEqual(['stored a 0-3']);
    expect(m.takeCacheEvents()).toEqual([]);
  });

  it('clears on reset only when no request holds blocks', () => {
    const m = model(64);
    m.submit(request('a', 10, 3, 0));
    m.step(0);
    m.takeCacheEvents();
    expect(m.resetPrefixCache()).toBe(false);
    expect(m.takeCacheEvents()).toEqual([]);
    runSteps(m);
    expect(m.resetPrefixCache()).toBe(true);
    expect(m.takeCacheEvents().map(summary)).toEqual(['cleared']);
    // The cache is empty: the same prompt is a miss again.
    m.submit(request('a2', 10, 1, 0));
    m.step(0);
    expect(m.counters.prefixHitTokens).toBe(0);
  });

  it('records nothing unless asked', () => {
    const m = model(64, false);
    m.submit(request('a', 10, 3, 0));
    expect(runSteps(m).flat()).toEqual([]);
  });
});
