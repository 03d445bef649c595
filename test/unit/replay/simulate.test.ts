import { describe, expect, it } from 'vitest';
import { replayRequests } from '../../../bench/replay/replay.js';
import { perfectPartitionHitRatio, type ReplayRequest, simulate, type SimulationOptions } from '../../../bench/replay/simulate.js';
import { summarize } from '../../../bench/replay/summary.js';
import type { TraceRequest } from '../../../bench/replay/trace.js';
import { openLoop, type Workload, type WorkloadRequest } from '../../../bench/replay/workload.js';
import type { EngineSnapshot } from '../../../core/engine.js';
import { createRng } from '../../../core/hash.js';
import { DEFAULT_TIMING } from '../../../engine-sim/timing-model.js';
import { DEFAULT_BLOCK_SIZE } from '../../../kvcache/block-hash.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';
import { createPipeline, type PolicyName, type RoutingPipeline } from '../../../router/routing/pipeline.js';

const trace = (...requests: [timestampMs: number, inputLength: number, outputLength: number, hashIds: number[]][]): TraceRequest[] =>
  requests.map(([timestampMs, inputLength, outputLength, hashIds]) => ({ timestampMs, inputLength, outputLength, hashIds }));

const requestsOf = (t: TraceRequest[]): ReplayRequest[] => {
  const prepare = replayRequests(DEFAULT_TIMING);
  return t.map((r, i) => prepare(r, `r${i}`)!);
};

function run(workload: Workload | TraceRequest[], engines: number, pipeline: RoutingPipeline | PolicyName, extra: Partial<SimulationOptions> = {}) {
  return simulate({
    workload: Array.isArray(workload) ? openLoop(workload) : workload,
    prepare: replayRequests({ ...DEFAULT_TIMING, ...extra.timing }),
    engines,
    pipeline: typeof pipeline === 'string' ? (sources) => createPipeline({ policy: pipeline }, { rng: createRng(1), ...sources }) : () => pipeline,
    index: new LocalPrefixIndex({ maxEntries: 100_000 }),
    indexBlockTokens: DEFAULT_BLOCK_SIZE,
    ...extra,
  });
}

const policy = (name: PolicyName): PolicyName => name;

/** Routes everything to the first engine and keeps what it was shown. */
function recordingPipeline(): RoutingPipeline & { seen: EngineSnapshot[][] } {
  const seen: EngineSnapshot[][] = [];
  return {
    name: 'first',
    seen,
    route: (_request, engines) => {
      seen.push([...engines]);
      return { engine: engines[0], policy: 'first', candidates: engines.length, score: 0 };
    },
  };
}

describe('replay simulation', () => {
  it('times one request as the engine model does: a 1,000-token prefill step, then one step per token', async () => {
    const result = await run(trace([0, 1000, 3, [0, 1]]), 1, policy('round-robin'));
    const [o] = result.outcomes;
    // 6.5 ms per step + 1,000 tokens at 30K/s + 0.044 ms per 1K KV tokens; then two decode steps over 1,001 and 1,002.
    const prefill = 6.5 + 1000 / 30 + 0.044;
    expect(o.firstTokenMs).toBeCloseTo(prefill, 9);
    expect(o.finishMs).toBeCloseTo(prefill + 6.5 + 0.044 * 1.001 + 6.5 + 0.044 * 1.002, 9);
    expect(o.cachedTokens).toBe(0);
    expect(result.durationMs).toBeCloseTo(o.finishMs, 9);
    const summary = summarize(result);
    expect(summary.ttftMs.p50).toBeCloseTo(prefill, 9);
    expect(summary.tpotMs.mean).toBeCloseTo((o.finishMs - o.firstTokenMs) / 2, 9);
    expect(summary.requestsPerSecond).toBeCloseTo(1000 / o.finishMs, 9);
  });

  it('sends a repeated prompt back to the engine that cached it under prefix-cache, and away under round-robin', async () => {
    // The same 1,000-token prompt twice, the second long after the first has finished.
    const requests = trace([0, 1000, 2, [0, 1]], [10_000, 1000, 2, [0, 1]]);
    const affine = await run(requests, 2, policy('prefix-cache'));
    expect(affine.outcomes[1].engine).toBe(affine.outcomes[0].engine);
    expect(affine.outcomes[1].reason).toBe('prefix-hit');
    // Whole 16-token blocks, never the last prompt token: 62 blocks.
    expect(affine.outcomes[1].cachedTokens).toBe(992);
    expect(summarize(affine).hitRatio).toBeCloseTo(992 / 2000, 12);
    // The hit shortens the prefill to the 8 uncached tokens.
    expect(affine.outcomes[1].firstTokenMs - 10_000).toBeCloseTo(6.5 + 8 / 30 + 0.044, 9);

    const spread = await run(requests, 2, policy('round-robin'));
    expect(spread.outcomes[1].engine).not.toBe(spread.outcomes[0].engine);
    expect(spread.outcomes[1].cachedTokens).toBe(0);
  });

  it("shows the pipeline the gateway's view: exact in-flight and pending prefill, scraped load", async () => {
    const requests = trace([0, 1000, 3, [0, 1]], [10, 600, 1, [7, 8]], [45, 600, 1, [9, 10]]);
    const pipeline = recordingPipeline();
    await run(requests, 2, pipeline);
    const [first, second, third] = pipeline.seen;
    expect(first.map((e) => [e.inFlight, e.pendingPrefillTokens])).toEqual([[0, 0], [0, 0]]);
    // At 10 ms the first request is still in its prefill: its 1,000 tokens are pending.
    expect(second[0]).toMatchObject({ inFlight: 1, pendingPrefillTokens: 1000 });
    // At 45 ms it has its first token (39.9 ms) but not its last (53 ms); the second (600 tokens, batched in the
    // step after 39.9 ms) is still prefilling.
    expect(third[0]).toMatchObject({ inFlight: 2, pendingPrefillTokens: 600 });
    // Scraped once a second: what the scrape at 0 ms saw, an idle engine.
    expect(third[0].load).toEqual({ running: 0, waiting: 0, kvUsage: 0, scrapedAt: 0 });

    const counts = recordingPipeline();
    await run(requests, 2, counts, { loadSignal: 'in-flight' });
    expect(counts.seen[1][0].pendingPrefillTokens).toBeUndefined();
  });

  it('keeps engines busy until every request has finished, and counts what they served', async () => {
    // Ten requests at once on one engine: they share the batch; the run ends with the last.
    const t = trace(...Array.from({ length: 10 }, (_, i) => [0, 2000, 20, [100 + 2 * i, 101 + 2 * i]] as [number, number, number, number[]]));
    const result = await run(t, 1, policy('least-request'));
    expect(result.outcomes.every((o) => o.finishMs > o.firstTokenMs && o.firstTokenMs > 0)).toBe(true);
    expect(result.durationMs).toBe(Math.max(...result.outcomes.map((o) => o.finishMs)));
    expect(result.counters[0]).toMatchObject({ promptTokens: 20_000, generationTokens: 200 });
    expect(result.meanInFlight[0]).toBeGreaterThan(0);
    expect(result.meanInFlight[0]).toBeLessThanOrEqual(10);
    // least-request gives no reason of its own.
    expect(result.reasons).toEqual({ none: 10 });
  });

  it('measures perfect partitioning as one LRU cache of all engines together', () => {
    const requests = requestsOf(trace([0, 1000, 2, [0, 1]], [1, 1000, 2, [0, 1]]));
    expect(perfectPartitionHitRatio(requests, 2)).toBeCloseTo(992 / 2000, 12);
    // A, B, A again, 1,500 tokens each. Two 2,000-token engines' worth keeps A whole (93 blocks hit, all but the
    // block of the last token); one evicts A's tail to serve B (tail blocks go first) and keeps 31 blocks of it.
    const big = requestsOf(trace([0, 1500, 1, [0, 1, 2]], [1, 1500, 1, [3, 4, 5]], [2, 1500, 1, [0, 1, 2]]));
    expect(perfectPartitionHitRatio(big, 2, { kvCapacityTokens: 2000 })).toBeCloseTo((93 * 16) / 4500, 12);
    expect(perfectPartitionHitRatio(big, 1, { kvCapacityTokens: 2000 })).toBeCloseTo((31 * 16) / 4500, 12);
  });

  it('leaves out requests no engine could hold, and scales arrival times', async () => {
    const result = await run(trace([0, 1000, 1, [0, 1]], [100, 1024, 10, [0, 1]]), 1, 'round-robin', { timing: { kvCapacityTokens: 1024 } });
    expect(result.skipped).toBe(1);
    expect(result.outcomes).toHaveLength(1);
    expect(openLoop(trace([0, 10, 1, [0]], [100, 10, 1, [1]]), 4).initial[1].timestampMs).toBe(25);
  });

  it("shows the pipeline the engines' KV and output in flight, and predicts each request's latency", async () => {
    const pipeline = recordingPipeline();
    const result = await run(trace([0, 1000, 3, [0, 1]], [10, 600, 5, [7, 8]]), 1, pipeline);
    // The second request sees the first's prompt plus half its expected output (256 tokens by default: no history).
    expect(pipeline.seen[1][0]).toMatchObject({ inFlightKvTokens: 1000 + 128, inFlightOutputTokens: 256 });
    // Alone on an idle engine, the model's TTFT is the engine's own: prefill plus one step.
    const [first] = result.outcomes;
    expect(first.predictedTtftMs).toBeCloseTo(first.firstTokenMs, 0);
    expect(first.predictedE2eMs).toBeGreaterThan(first.predictedTtftMs);
  });

  it('runs closed loops: a user sends its next request when the last one ended, and keeps its session', async () => {
    const turn = (at: number, k: number): WorkloadRequest => ({ timestampMs: at, inputLength: 600 * k, outputLength: 4, hashIds: Array.from({ length: 2 * k }, (_, i) => i), session: 'user-1' });
    let turns = 1;
    const workload: Workload = { initial: [turn(0, 1)], next: (_ended, at) => (turns < 4 ? turn(at + 100, ++turns) : undefined) };
    const result = await run(workload, 4, 'prefix-cache');
    expect(result.outcomes).toHaveLength(4);
    for (let i = 1; i < 4; i++) expect(result.outcomes[i].arrivalMs).toBeCloseTo(result.outcomes[i - 1].finishMs + 100, 9);
    // Each turn extends the last, so the conversation stays where its history is cached.
    expect(new Set(result.outcomes.map((o) => o.engine)).size).toBe(1);
    expect(result.outcomes.slice(1).every((o) => o.cachedTokens > 0)).toBe(true);
    expect(result.requests.map((r) => r.session)).toEqual(['user-1', 'user-1', 'user-1', 'user-1']);
  });

  it('stops a closed loop at maxDurationMs', async () => {
    const workload: Workload = { initial: [{ timestampMs: 0, inputLength: 100, outputLength: 2, hashIds: [0] }], next: (ended, at) => ({ ...ended, timestampMs: at + 1000 }) };
    const result = await run(workload, 1, 'least-request', { maxDurationMs: 10_000 });
    expect(result.outcomes.length).toBeGreaterThan(5);
    expect(result.outcomes.length).toBeLessThan(12);
    expect(Math.max(...result.outcomes.map((o) => o.arrivalMs))).toBeLessThanOrEqual(10_000);
  });
});
