import { describe, expect, it } from 'vitest';
import type { RequestOutcome, SimulationResult } from '../../../bench/replay/simulate.js';
import { summarize } from '../../../bench/replay/summary.js';

/** An outcome arriving at 0: first token at `ttft`, last at `e2e`, with the predictions given. */
const outcome = (ttft: number, e2e: number, outputTokens: number, predictedTtftMs: number, predictedE2eMs: number): RequestOutcome => ({
  arrivalMs: 0,
  engine: 0,
  reason: undefined,
  promptTokens: 100,
  outputTokens,
  cachedTokens: 0,
  firstTokenMs: ttft,
  finishMs: e2e,
  predictedTtftMs,
  predictedE2eMs,
});

const result = (outcomes: RequestOutcome[]): SimulationResult => ({
  policy: 'hand-made',
  outcomes,
  durationMs: 10_000,
  counters: [{ promptTokens: 0, generationTokens: 0, prefixQueryTokens: 400, prefixHitTokens: 100, preemptions: 2 }],
  meanInFlight: [3, 1],
  samples: [],
  reasons: {},
  skipped: 0,
  requests: [],
});

describe('replay summary', () => {
  it('gives mean, p50, p90 and p99 of TTFT, TPOT and E2E (nearest rank)', () => {
    // TTFT 1..100 ms; E2E = TTFT + 1,000; 11 output tokens, so TPOT = 100 ms for all but the one-token request.
    const outcomes = Array.from({ length: 100 }, (_, i) => outcome(i + 1, i + 1 + 1000, i === 0 ? 1 : 11, i + 1, i + 1 + 1000));
    const s = summarize(result(outcomes.reverse()));
    expect(s.requests).toBe(100);
    expect(s.ttftMs).toEqual({ mean: 50.5, p50: 50, p90: 90, p99: 99 });
    expect(s.e2eMs).toEqual({ mean: 1050.5, p50: 1050, p90: 1090, p99: 1099 });
    // Every answer's last token comes 1,000 ms and 10 tokens after its first; the one-token answer has no TPOT.
    expect(s.tpotMs).toEqual({ mean: 100, p50: 100, p90: 100, p99: 100 });
    expect(s.hitRatio).toBe(0.25);
    expect(s.load).toEqual({ max: 3, mean: 2 });
    expect(s.requestsPerSecond).toBe(10);
    expect(s.preemptions).toBe(2);
  });

  it('measures the predictions against the outcomes: relative error median, p90 and signed bias', () => {
    // Observed TTFT 100 ms each; predictions off by -50%, -10%, 0, +10%, +20%, +30%, +40%, +60%, +80%, +100%.
    const off = [-0.5, -0.1, 0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1];
    // E2E observed 1,000 ms, predicted 500 ms every time: 50% off, always optimistic.
    const s = summarize(result(off.map((e) => outcome(100, 1000, 10, 100 * (1 + e), 500))));
    // |errors| sorted: 0, .1, .1, .2, .3, .4, .5, .6, .8, 1: nearest-rank p50 is the 5th, p90 the 9th.
    expect(s.prediction.ttft.median).toBeCloseTo(0.3, 12);
    expect(s.prediction.ttft.p90).toBeCloseTo(0.8, 12);
    expect(s.prediction.ttft.bias).toBeCloseTo(0.28, 12);
    expect(s.prediction.e2e).toEqual({ median: 0.5, p90: 0.5, bias: -0.5 });
  });

  it('has no numbers where there are no requests to measure', () => {
    const s = summarize(result([]));
    expect(s.ttftMs.p50).toBeNaN();
    expect(s.prediction.ttft.median).toBeNaN();
    expect(s.prediction.e2e.bias).toBeNaN();
  });
});
