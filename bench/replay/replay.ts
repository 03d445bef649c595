import { performance } from 'node:perf_hooks';
import { createRng } from '../../core/hash.js';
import { DEFAULT_TIMING, type TimingParams } from '../../engine-sim/timing-model.js';
import { blockNamespace, DEFAULT_BLOCK_SIZE as INDEX_BLOCK_TOKENS } from '../../kvcache/block-hash.js';
import type { PrefixIndex } from '../../kvcache/types.js';
import { createPipeline, type PolicyName, type RoutingConfig } from '../../router/routing/pipeline.js';
import type { ReplayReport } from './report.js';
import { type IndexHashing, type LoadSignal, perfectPartitionHitRatio, REPLAY_MODEL, type ReplayRequest, simulate } from './simulate.js';
import { summarize, ttftCdf } from './summary.js';
import { PromptHasher, routerBlockHashes } from './tokens.js';
import type { Workload, WorkloadRequest } from './workload.js';

/** A policy to replay: a preset by name, or a routing block as a config file gives it (explicit scorers, weights). */
export type ReplayPolicy = PolicyName | { readonly name: string; readonly routing: RoutingConfig };

export interface ReplayOptions {
  readonly workload: Workload;
  /** For the report's title. */
  readonly traceName: string;
  readonly engines: number;
  readonly policies: readonly ReplayPolicy[];
  /** How much faster than the trace the workload's arrivals come (openLoop's), for the report. */
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
  /** Closed-loop workloads stop sending after this much virtual time. */
  readonly maxDurationMs?: number;
  readonly onProgress?: (policy: string, finished: number, total: number) => void;
}

/**
 * Turns workload requests into what the simulated engines and the index see: the engines' 16-token block hashes
 * and, in approximate hashing, the router's. Requests that can never run on one engine (prompt + output beyond its
 * KV capacity) give undefined.
 */
export function replayRequests(timing: Readonly<TimingParams>, hashing: IndexHashing = 'approximate'): (request: WorkloadRequest, id: string) => ReplayRequest | undefined {
  const hasher = new PromptHasher(timing.blockSize);
  const indexBlocks = { blockSize: INDEX_BLOCK_TOKENS, namespace: blockNamespace(REPLAY_MODEL) };
  const maxTokens = Math.floor(timing.kvCapacityTokens / timing.blockSize) * timing.blockSize;
  // Every policy replays the same requests of an open-loop trace: each is hashed once.
  const hashed = new WeakMap<WorkloadRequest, Pick<ReplayRequest, 'hashes' | 'indexHashes'>>();
  return (r, id) => {
    if (r.inputLength + r.outputLength > maxTokens) return undefined;
    let blocks = hashed.get(r);
    if (blocks === undefined) {
      blocks = { hashes: hasher.hashes(r), ...(hashing === 'approximate' ? { indexHashes: routerBlockHashes(r, indexBlocks) } : {}) };
      hashed.set(r, blocks);
    }
    return { id, arrivalMs: r.timestampMs, promptTokens: r.inputLength, outputTokens: r.outputLength, session: r.session, ...blocks };
  };
}

/** Replays the workload once per policy, each on a cold fleet, and gathers the report. */
export async function runReplay(opts: ReplayOptions): Promise<ReplayReport & { skipped: number }> {
  const timing: TimingParams = { ...DEFAULT_TIMING, ...opts.timing };
  const prepare = replayRequests(timing, opts.hashing);
  let referenceHitRatio: number | undefined;
  let requests = 0;
  let skipped = 0;
  const policies = [];
  for (const policy of opts.policies) {
    const { name, routing } = typeof policy === 'string' ? { name: policy, routing: { policy } } : policy;
    const index = opts.createIndex();
    const started = performance.now();
    const result = await simulate({
      workload: opts.workload,
      prepare,
      engines: opts.engines,
      pipeline: (sources) => createPipeline(routing, { rng: createRng(opts.seed ?? 1), ...sources }),
      index,
      indexBlockTokens: INDEX_BLOCK_TOKENS,
      timing,
      loadSignal: opts.loadSignal,
      hashing: opts.hashing,
      maxDurationMs: opts.maxDurationMs,
      onProgress: opts.onProgress === undefined ? undefined : (done, total) => opts.onProgress!(name, done, total),
    });
    const wallMs = performance.now() - started;
    await index.close();
    // A closed loop's requests depend on the policy; the reference is the first policy's, which they all resemble.
    referenceHitRatio ??= perfectPartitionHitRatio(result.requests, opts.engines, timing);
    requests = Math.max(requests, result.outcomes.length);
    skipped = Math.max(skipped, result.skipped);
    policies.push({
      summary: { ...summarize(result), policy: name },
      wallMs,
      ttftCdf: ttftCdf(result),
      load: {
        atMs: result.samples.map((sample) => sample.atMs),
        inFlight: Array.from({ length: opts.engines }, (_, e) => result.samples.map((sample) => sample.inFlight[e])),
        batch: Array.from({ length: opts.engines }, (_, e) => result.samples.map((sample) => sample.batch[e])),
      },
    });
  }
  return {
    trace: opts.traceName,
    engines: opts.engines,
    rateScale: opts.rateScale,
    loadSignal: opts.loadSignal ?? 'pending',
    hashing: opts.hashing ?? 'approximate',
    requests,
    timing,
    referenceHitRatio: referenceHitRatio ?? 0,
    generatedAt: new Date().toISOString(),
    policies,
    skipped,
  };
}
