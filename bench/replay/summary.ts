import type { RequestOutcome, SimulationResult } from './simulate.js';

/** A latency's distribution over the replayed requests, ms of virtual time. */
export interface Distribution {
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
}

/**
 * How far the engine model's prediction at routing time was from what the request then saw, relative to what it
 * saw: the median and p90 of |predicted - observed| / observed, and the mean of (predicted - observed) / observed
 * (the bias: above 0 the model is pessimistic, below 0 optimistic).
 */
export interface PredictionError {
  readonly median: number;
  readonly p90: number;
  readonly bias: number;
}

/** What the replayer reports per policy. Times in ms of virtual time. */
export interface PolicySummary {
  readonly policy: string;
  readonly requests: number;
  /** Arrival to first token. */
  readonly ttftMs: Distribution;
  /** Time per output token after the first; requests with one output token have none. */
  readonly tpotMs: Distribution;
  /** Arrival to last token: what a user waits for a whole answer. */
  readonly e2eMs: Distribution;
  /** The predictions of the chosen engine's TTFT and E2E against the simulated outcome. */
  readonly prediction: { readonly ttft: PredictionError; readonly e2e: PredictionError };
  /** Cached prompt tokens / prompt tokens, as the engines' caches actually served them. */
  readonly hitRatio: number;
  /** Per engine in-flight requests averaged over the run: the busiest engine's, and the mean over engines. */
  readonly load: { readonly max: number; readonly mean: number };
  /** Finished requests / virtual time from the first arrival to the last finish. */
  readonly requestsPerSecond: number;
  readonly preemptions: number;
  readonly reasons: Readonly<Record<string, number>>;
}

export function summarize(result: SimulationResult): PolicySummary {
  const ttft: number[] = [];
  const tpot: number[] = [];
  const e2e: number[] = [];
  for (const o of result.outcomes) {
    ttft.push(o.firstTokenMs - o.arrivalMs);
    e2e.push(o.finishMs - o.arrivalMs);
    if (o.outputTokens > 1) tpot.push((o.finishMs - o.firstTokenMs) / (o.outputTokens - 1));
  }
  let hit = 0;
  let query = 0;
  let preemptions = 0;
  for (const c of result.counters) {
    hit += c.prefixHitTokens;
    query += c.prefixQueryTokens;
    preemptions += c.preemptions;
  }
  const loads = result.meanInFlight;
  return {
    policy: result.policy,
    requests: result.outcomes.length,
    ttftMs: distribution(ttft),
    tpotMs: distribution(tpot),
    e2eMs: distribution(e2e),
    prediction: {
      ttft: predictionError(result.outcomes, (o) => o.predictedTtftMs, (o) => o.firstTokenMs - o.arrivalMs),
      e2e: predictionError(result.outcomes, (o) => o.predictedE2eMs, (o) => o.finishMs - o.arrivalMs),
    },
    hitRatio: query === 0 ? 0 : hit / query,
    load: { max: loads.length === 0 ? 0 : Math.max(...loads), mean: mean(loads) },
    requestsPerSecond: result.durationMs > 0 ? result.outcomes.length / (result.durationMs / 1000) : 0,
    preemptions,
    reasons: result.reasons,
  };
}

function distribution(values: number[]): Distribution {
  const sorted = values.sort((a, b) => a - b);
  return { mean: mean(sorted), p50: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99) };
}

/** Requests observed at 0 ms (none in the timing model: every step takes time) have no relative error and are left out. */
function predictionError(
  outcomes: readonly RequestOutcome[],
  predicted: (o: RequestOutcome) => number,
  observed: (o: RequestOutcome) => number,
): PredictionError {
  const absolute: number[] = [];
  let signed = 0;
  for (const o of outcomes) {
    const seen = observed(o);
    if (!(seen > 0)) continue;
    const error = (predicted(o) - seen) / seen;
    absolute.push(Math.abs(error));
    signed += error;
  }
  absolute.sort((a, b) => a - b);
  return { median: percentile(absolute, 0.5), p90: percentile(absolute, 0.9), bias: absolute.length === 0 ? NaN : signed / absolute.length };
}

/** Nearest-rank percentile of sorted values (q in (0, 1]); NaN when there are none. */
function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/** The TTFT distribution as at most `points` (ms, fraction of requests at or below) pairs, for a CDF plot. */
export function ttftCdf(result: SimulationResult, points = 200): [number, number][] {
  const ttft = result.outcomes.map((o) => o.firstTokenMs - o.arrivalMs).sort((a, b) => a - b);
  const out: [number, number][] = [];
  if (ttft.length === 0) return out;
  const step = Math.max(1, Math.floor(ttft.length / points));
  for (let i = step - 1; i < ttft.length; i += step) out.push([ttft[i], (i + 1) / ttft.length]);
  if (out[out.length - 1][1] < 1) out.push([ttft[ttft.length - 1], 1]);
  return out;
}
