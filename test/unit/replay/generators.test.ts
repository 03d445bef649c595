import { describe, expect, it } from 'vitest';
import { multiTurnTrace, sharedSystemPromptTrace } from '../../../bench/replay/generators.js';
import { formatTrace, parseTrace } from '../../../bench/replay/trace.js';

describe('trace generators', () => {
  it('shared-system-prompt: every request starts with the same whole blocks, then has its own', () => {
    const trace = sharedSystemPromptTrace({
      requests: 50,
      ratePerSec: 10,
      systemPromptTokens: 2000,
      userTokens: [100, 900],
      outputTokens: [1, 5],
      seed: 1,
    });
    expect(trace).toHaveLength(50);
    const own = new Set<number>();
    for (const r of trace) {
      expect(r.hashIds.slice(0, 4)).toEqual([0, 1, 2, 3]);
      expect(r.inputLength).toBeGreaterThanOrEqual(2048 + 100);
      for (const id of r.hashIds.slice(4)) {
        expect(own.has(id)).toBe(false);
        own.add(id);
      }
    }
    // Poisson arrivals at 10/s: 50 requests over about 5 s, in order.
    const last = trace[trace.length - 1].timestampMs;
    expect(last).toBeGreaterThan(2000);
    expect(last).toBeLessThan(10_000);
    expect(trace.map((r) => r.timestampMs)).toEqual([...trace.map((r) => r.timestampMs)].sort((a, b) => a - b));
    expect(parseTrace(formatTrace(trace))).toEqual(trace);
  });

  it('multi-turn: each turn extends the previous turn of its conversation', () => {
    const trace = multiTurnTrace({
      conversations: 20,
      ratePerSec: 1,
      turns: [2, 5],
      thinkTimeMs: 5000,
      firstPromptTokens: [300, 3000],
      turnTokens: [100, 800],
      outputTokens: [1, 5],
      seed: 2,
    });
    // Group by first block: conversations never share one.
    const byConversation = new Map<number, typeof trace>();
    for (const r of trace) byConversation.set(r.hashIds[0], [...(byConversation.get(r.hashIds[0]) ?? []), r]);
    expect(byConversation.size).toBe(20);
    for (const turns of byConversation.values()) {
      expect(turns.length).toBeGreaterThanOrEqual(2);
      expect(turns.length).toBeLessThanOrEqual(5);
      for (let k = 1; k < turns.length; k++) {
        const [prev, next] = [turns[k - 1], turns[k]];
        expect(next.timestampMs).toBeGreaterThanOrEqual(prev.timestampMs);
        expect(next.inputLength).toBeGreaterThan(prev.inputLength);
        expect(next.hashIds.slice(0, prev.hashIds.length)).toEqual(prev.hashIds);
      }
    }
    expect(parseTrace(formatTrace(trace))).toEqual(trace);
  });

  it('is reproducible from its seed', () => {
    const opts = { requests: 20, ratePerSec: 5, systemPromptTokens: 512, userTokens: [10, 20] as const, outputTokens: [1, 2] as const, seed: 9 };
    expect(sharedSystemPromptTrace(opts)).toEqual(sharedSystemPromptTrace(opts));
    expect(sharedSystemPromptTrace({ ...opts, seed: 10 })).not.toEqual(sharedSystemPromptTrace(opts));
  });
});
