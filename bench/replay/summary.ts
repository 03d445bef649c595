import type { SimulationResult } from './simulate.js';

/** What the replayer reports per policy. Times in ms of virtual time. */
export interface PolicySummary {
  readonly policy: string;
  readonly requests: number;
  readonly ttftMs: { readonly p50: number; readonly p90: number; readonly p99: number };
  /** Time per output token after the first; requests with one output token have none. */
  readonly tpotMs: { readonly mean: number; readonly p99: number };
  readonly e2eMs: { readonly p99: number };
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
  ttft.sort((a, b) => a - b);
  tpot.sort((a, b) => a - b);
  e2e.sort((a, b) => a - b);
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
    ttftMs: { p50: percentile(ttft, 0.5), p90: percentile(ttft, 0.9), p99: percentile(ttft, 0.99) },
    tpotMs: { mean: mean(tpot), p99: percentile(tpot, 0.99) },
    e2eMs: { p99: percentile(e2e, 0.99) },
    hitRatio: query === 0 ? 0 : hit / query,
    load: { max: loads.length === 0 ? 0 : Math.max(...loads), mean: mean(loads) },
    requestsPerSecond: result.durationMs > 0 ? result.outcomes.length / (result.durationMs / 1000) : 0,
    preemptions,
    reasons: result.reasons,
  };
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
