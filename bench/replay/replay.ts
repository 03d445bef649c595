import { performance } from 'node:perf_hooks';
import { createRng } from '../../core/hash.js';
import { DEFAULT_TIMING, type TimingParams } from '../../engine-sim/timing-model.js';
import { blockNamespace, DEFAULT_BLOCK_SIZE as INDEX_BLOCK_TOKENS } from '../../kvcache/block-hash.js';
import type { PrefixIndex } from '../../kvcache/types.js';
import { createPipeline, type PolicyName } from '../../router/routing/pipeline.js';
import type { ReplayReport } from './report.js';
import { type IndexHashing, type LoadSignal, perfectPartitionHitRatio, REPLAY_MODEL, simulate, type ReplayRequest } from './simulate.js';
import { summarize, ttftCdf } from './summary.js';
import { PromptHasher, routerBlockHashes } from './tokens.js';
import type { TraceRequest } from './trace.js';

export interface ReplayOptions {
  readonly trace: readonly TraceRequest[];
  /** For the report's title. */
  readonly traceName: string;
  readonly engines: number;
  readonly policies: readonly PolicyName[];
  /** Arrivals come this many times faster than in the trace. */
  readonly rateScale: number;
  readonly timing?: Partial<TimingParams>;
  /** Default `pending`: see simulate.ts. */
  readonly loadSignal?: LoadSignal;
  /** Default `approximate`: see simulate.ts. */
  readonly hashing?: IndexHashing;
  /** A fresh, empty index per policy: every policy starts from cold caches. */
  readonly createIndex: () => PrefixIndex;
  /** Seeds the policies' tie-breaking, so a replay is reproducible. */
  readonly seed?: number;
  readonly onProgress?: (policy: string, finished: number, total: number) => void;
}

/** Requests that can never run on one engine (prompt + output beyond its KV capacity) are left out and counted. */
export function toReplayRequests(
  trace: readonly TraceRequest[],
  rateScale: number,
  timing: Readonly<TimingParams>,
  hashing: IndexHashing = 'approximate',
): { requests: ReplayRequest[]; skipped: number } {
  if (!(rateScale > 0 && Number.isFinite(rateScale))) throw new RangeError(`rate scale must be a positive number, got ${rateScale}`);
  const hasher = new PromptHasher(timing.blockSize);
  const indexBlocks = { blockSize: INDEX_BLOCK_TOKENS, namespace: blockNamespace(REPLAY_MODEL) };
  const maxTokens = Math.floor(timing.kvCapacityTokens / timing.blockSize) * timing.blockSize;
  const requests: ReplayRequest[] = [];
  let skipped = 0;
  trace.forEach((r, i) => {
    if (r.inputLength + r.outputLength > maxTokens) {
      skipped++;
      return;
    }
    requests.push({
      id: `r${i}`,
      arrivalMs: r.timestampMs / rateScale,
      promptTokens: r.inputLength,
      outputTokens: r.outputLength,
      hashes: hasher.hashes(r),
      ...(hashing === 'approximate' ? { indexHashes: routerBlockHashes(r, indexBlocks) } : {}),
    });
  });
  return { requests, skipped };
}

/** Replays the trace once per policy, each on a cold fleet, and gathers the report. */
export async function runReplay(opts: ReplayOptions): Promise<ReplayReport & { skipped: number }> {
  const timing: TimingParams = { ...DEFAULT_TIMING, ...opts.timing };
  const { requests, skipped } = toReplayRequests(opts.trace, opts.rateScale, timing, opts.hashing);
  const referenceHitRatio = perfectPartitionHitRatio(requests, opts.engines, timing);
  const policies = [];
  for (const policy of opts.policies) {
    const pipeline = createPipeline({ policy }, { rng: createRng(opts.seed ?? 1) });
    const index = opts.createIndex();
    const started = performance.now();
    const result = await simulate({
      requests,
      engines: opts.engines,
      pipeline,
      index,
      indexBlockTokens: INDEX_BLOCK_TOKENS,
      timing,
      loadSignal: opts.loadSignal,
      hashing: opts.hashing,
      onProgress: opts.onProgress === undefined ? undefined : (done, total) => opts.onProgress!(policy, done, total),
    });
    const wallMs = performance.now() - started;
    await index.close();
    policies.push({
      summary: summarize(result),
      wallMs,
      ttftCdf: ttftCdf(result),
      load: {
        atMs: result.samples.map((sample) => sample.atMs),
        inFlight: Array.from({ length: opts.engines }, (_, e) => result.samples.map((sample) => sample.inFlight[e])),
      },
    });
  }
  return {
    trace: opts.traceName,
    engines: opts.engines,
    rateScale: opts.rateScale,
    loadSignal: opts.loadSignal ?? 'pending',
    hashing: opts.hashing ?? 'approximate',
    requests: requests.length,
    timing,
    referenceHitRatio,
    generatedAt: new Date().toISOString(),
    policies,
    skipped,
  };
}
