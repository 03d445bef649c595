import { describe, expect, it } from 'vitest';
import { DEFAULT_ENGINE_PERF, type EnginePerf } from '../../../core/engine.js';
import {
  MAX_PREFILL_SHARE,
  predictLatency,
  prefillMs,
  prefillShare,
  type QueuedLoad,
  queuedLoad,
  queuedPrefill,
  type RequestShape,
  stepMs,
} from '../../../router/routing/engine-model.js';
import { engine } from './fixtures.js';

// Round figures so every expectation below can be checked by hand.
const PERF: EnginePerf = { prefillTokensPerSec: 10_000, decodeBaseMs: 5, decodeMsPer1kKvTokens: 0.1 };
const IDLE: QueuedLoad = { inFlight: 0, pendingPrefillTokens: 0, prefillHeadAgeMs: 0, kvTokens: 0, outputTokens: 0, recentPrefillRate: 0 };
const REQUEST: RequestShape = { promptTokens: 4000, uncachedTokens: 3000, outputTokens: 101 };

const load = (o: Partial<QueuedLoad>): QueuedLoad => ({ ...IDLE, ...o });
const shape = (o: Partial<RequestShape>): RequestShape => ({ ...REQUEST, ...o });

describe('engine model: the parts', () => {
  it('a step reads the batch KV on top of its fixed cost; prefill runs at the rate', () => {
    expect(stepMs(PERF, 0)).toBe(5);
    expect(stepMs(PERF, 20_000)).toBeCloseTo(7, 12);
    expect(prefillMs(PERF, 3000)).toBeCloseTo(300, 12);
    // The engine-sim defaults: a decode step of 32 x 2,000 tokens of context takes 9.3 ms (timing-model.ts).
    expect(stepMs(DEFAULT_ENGINE_PERF, 64_000)).toBeCloseTo(9.316, 12);
  });

  it('reads the exact counts of a snapshot, and counts nothing where they are not tracked', () => {
    const tracked = {
      ...engine('a', { inFlight: 3, pendingPrefillTokens: 1200 }),
      inFlightKvTokens: 9000,
      inFlightOutputTokens: 600,
      recentPrefillRate: 250,
      prefillHeadAgeMs: 40,
    };
    expect(queuedLoad(tracked)).toEqual({ inFlight: 3, pendingPrefillTokens: 1200, prefillHeadAgeMs: 40, kvTokens: 9000, outputTokens: 600, recentPrefillRate: 250 });
    // The replayer's in-flight-only mode: requests are counted, their tokens are not known; each is taken to be like
    // the request being placed, when there is one.
    expect(queuedLoad(engine('b', { inFlight: 2 }))).toEqual({ ...IDLE, inFlight: 2 });
    expect(queuedLoad(engine('b', { inFlight: 2 }), REQUEST)).toEqual({ ...IDLE, inFlight: 2, kvTokens: 2 * 4050.5, outputTokens: 2 * 101 });
    // Counts the gateway tracks win over the guess.
    expect(queuedLoad(tracked, REQUEST)).toMatchObject({ kvTokens: 9000, outputTokens: 600 });
  });

  it('queued prefill is what was sent less what the engine computed of its head since the last first token', () => {
    // 5,000 tokens sent; the engine has been on the head for 100 ms at 10K tokens/s: 1,000 done.
    expect(queuedPrefill(PERF, load({ pendingPrefillTokens: 5000, prefillHeadAgeMs: 100 }))).toBeCloseTo(4000, 9);
    expect(queuedPrefill(PERF, load({ pendingPrefillTokens: 5000 }))).toBe(5000);
    // Never less than nothing, however long ago.
    expect(queuedPrefill(PERF, load({ pendingPrefillTokens: 5000, prefillHeadAgeMs: 60_000 }))).toBe(0);
  });

  it('the prefill share is the recent prefill rate over the engine rate, capped at MAX_PREFILL_SHARE', () => {
    expect(prefillShare(PERF, load({ recentPrefillRate: 2500 }))).toBeCloseTo(0.25, 12);
    expect(prefillShare(PERF, load({ recentPrefillRate: 0 }))).toBe(0);
    expect(MAX_PREFILL_SHARE).toBeLessThan(1);
    expect(prefillShare(PERF, load({ recentPrefillRate: 9_999_999 }))).toBe(MAX_PREFILL_SHARE);
  });
});

describe('predictLatency', () => {
  it('computes the three times of a hand-worked case', () => {
    const busy = load({ inFlight: 2, pendingPrefillTokens: 1000, kvTokens: 20_000, outputTokens: 300, recentPrefillRate: 2500 });
    const p = predictLatency(PERF, busy, REQUEST);
    // TTFT: (1,000 queued + 3,000 own) tokens at 10K/s = 400 ms, then a step over 20,000 + 4,000 KV = 5 + 2.4 ms.
    expect(p.ttftMs).toBeCloseTo(407.4, 9);
    // Decode: own KV = 4,000 + 101 / 2 = 4,050.5; 100 tokens after the first, each a step over 24,050.5 KV
    // (5 + 2.40505 ms), over the 75% of the engine the 2,500 tokens/s of recent prefill leave.
    expect(p.decodeMs).toBeCloseTo((100 * 7.40505) / 0.75, 9);
    // Externality: 2 in flight each wait for the 3,000 tokens of prefill (300 ms each); then the 4,050.5 KV tokens
    // lengthen each shared step by 0.40505 ms, for min(2 x 101, 300 / 2) = 150 steps.
    expect(p.externalityMs).toBeCloseTo(600 + 0.40505 * 150, 9);
  });

  it('on an idle engine: no queue, no externality, decode at the request own KV', () => {
    const p = predictLatency(PERF, IDLE, REQUEST);
    expect(p.ttftMs).toBeCloseTo(300 + 5 + 0.4, 9);
    expect(p.decodeMs).toBeCloseTo(100 * (5 + 0.40505), 9);
    expect(p.externalityMs).toBe(0);
    // One output token: nothing to decode after the first.
    expect(predictLatency(PERF, IDLE, shape({ outputTokens: 1 })).decodeMs).toBe(0);
  });

  it('pending prefill on the engine raises the TTFT by its prefill time, and nothing else', () => {
    const a = predictLatency(PERF, load({ inFlight: 1 }), REQUEST);
    const b = predictLatency(PERF, load({ inFlight: 1, pendingPrefillTokens: 5000 }), REQUEST);
    expect(b.ttftMs - a.ttftMs).toBeCloseTo(500, 9);
    expect(b.decodeMs).toBe(a.decodeMs);
    expect(b.externalityMs).toBe(a.externalityMs);
    // Less what the engine has done of it already: 300 ms into it, 3,000 tokens are left.
    const c = predictLatency(PERF, load({ inFlight: 1, pendingPrefillTokens: 5000, prefillHeadAgeMs: 200 }), REQUEST);
    expect(c.ttftMs - a.ttftMs).toBeCloseTo(300, 9);
  });

  it('a prefix the engine holds lowers the TTFT and what the request costs the others', () => {
    const busy = load({ inFlight: 3, outputTokens: 600 });
    const cold = predictLatency(PERF, busy, shape({ uncachedTokens: 4000 }));
    const warm = predictLatency(PERF, busy, shape({ uncachedTokens: 400 }));
    expect(cold.ttftMs - warm.ttftMs).toBeCloseTo(360, 9);
    expect(cold.externalityMs - warm.externalityMs).toBeCloseTo(3 * 360, 9);
    // Its KV is the whole prompt either way: the decode does not care what was cached.
    expect(warm.decodeMs).toBe(cold.decodeMs);
  });

  it('more KV in flight (a bigger decode batch) lengthens every step: the decode and the first token', () => {
    const small = predictLatency(PERF, load({ inFlight: 4, kvTokens: 10_000, outputTokens: 400 }), REQUEST);
    const big = predictLatency(PERF, load({ inFlight: 4, kvTokens: 210_000, outputTokens: 400 }), REQUEST);
    // 200,000 more KV tokens: 20 ms more per step, for 100 steps of decode and the one of the first token.
    expect(big.decodeMs - small.decodeMs).toBeCloseTo(100 * 20, 9);
    expect(big.ttftMs - small.ttftMs).toBeCloseTo(20, 9);
    expect(big.externalityMs).toBe(small.externalityMs);
  });

  it('more requests decoding on the engine: each one waits for the prefill, and their steps read the new KV', () => {
    const few = predictLatency(PERF, load({ inFlight: 1, outputTokens: 200 }), REQUEST);
    const many = predictLatency(PERF, load({ inFlight: 8, outputTokens: 1600 }), REQUEST);
    expect(few.externalityMs).toBeCloseTo(300 + 0.40505 * 100, 9);
    expect(many.externalityMs).toBeCloseTo(8 * 300 + 0.40505 * 800, 9);
    // The steps the others share with it are capped by its own output: it leaves after 101 tokens.
    const long = predictLatency(PERF, load({ inFlight: 2, outputTokens: 100_000 }), REQUEST);
    expect(long.externalityMs).toBeCloseTo(2 * 300 + 0.40505 * 2 * 101, 9);
  });

  it('recent prefill stretches the decode by 1 / (1 - share), no further than MAX_PREFILL_SHARE', () => {
    const quiet = predictLatency(PERF, IDLE, REQUEST);
    const half = predictLatency(PERF, load({ recentPrefillRate: 5000 }), REQUEST);
    expect(half.decodeMs).toBeCloseTo(2 * quiet.decodeMs, 9);
    expect(half.ttftMs).toBe(quiet.ttftMs);
    const capped = predictLatency(PERF, load({ recentPrefillRate: PERF.prefillTokensPerSec * MAX_PREFILL_SHARE }), REQUEST);
    const beyond = predictLatency(PERF, load({ recentPrefillRate: PERF.prefillTokensPerSec * 50 }), REQUEST);
    expect(capped.decodeMs).toBeCloseTo(quiet.decodeMs / (1 - MAX_PREFILL_SHARE), 9);
    expect(Number.isFinite(beyond.decodeMs)).toBe(true);
    expect(beyond.decodeMs).toBeCloseTo(capped.decodeMs, 9);
  });

  it('an engine at half the speed takes twice as long on every term', () => {
    const slow: EnginePerf = { prefillTokensPerSec: 5000, decodeBaseMs: 10, decodeMsPer1kKvTokens: 0.2 };
    // The share of recent prefill doubles too on the slower engine; keep it out to compare the rest.
    const busy = load({ inFlight: 3, pendingPrefillTokens: 2000, kvTokens: 50_000, outputTokens: 900 });
    const fast = predictLatency(PERF, busy, REQUEST);
    const halved = predictLatency(slow, busy, REQUEST);
    expect(halved.ttftMs).toBeCloseTo(2 * fast.ttftMs, 9);
    expect(halved.decodeMs).toBeCloseTo(2 * fast.decodeMs, 9);
    expect(halved.externalityMs).toBeCloseTo(2 * fast.externalityMs, 9);
  });
});
