import type { EngineLoad, EngineSnapshot, EngineSpec } from '../../core/engine.js';
import { type CacheEvent, TimingModel, type StepResult, type TimingCounters, type TimingParams } from '../../engine-sim/timing-model.js';
import type { BlockHash, PrefixIndex } from '../../kvcache/types.js';
import type { RoutingPipeline } from '../../router/routing/pipeline.js';
import type { RequestFeatures } from '../../router/routing/types.js';

/**
 * Discrete-event simulation of a fleet behind the router, on a virtual clock: N engines, each the engine-sim
 * TimingModel (the same continuous-batching model the simulated engine runs), and the router's real routing
 * pipeline and a prefix index, with no HTTP and no timers. Two kinds of events move the clock:
 *
 * - an arrival: the request's prefix is looked up in the index, the pipeline routes it over snapshots of the
 *   engines, the index records the prompt's blocks for the chosen engine (optimistically, as the live router
 *   does), and the request joins that engine's queue;
 * - the end of an engine step: the step's tokens are emitted (first tokens, finishes), and the engine starts its
 *   next step if it has work. A request arriving while a step runs joins the next one, as in vLLM.
 *
 * At equal times arrivals go first, so requests arriving together are batched together.
 *
 * What the pipeline sees of an engine is what the live router sees: `inFlight` is exact (requests routed there
 * and not finished), and so is `pendingPrefillTokens` (per request routed there and without a first token yet,
 * its prompt tokens less what the index expected cached, as the gateway estimates it), while running/waiting/KV
 * usage come from a scrape every `scrapeIntervalMs` (the gateway's default interval), so policies that rely on
 * scraped load pay for its staleness here as they do live.
 */

export interface ReplayRequest {
  readonly id: string;
  readonly arrivalMs: number;
  readonly promptTokens: number;
  readonly outputTokens: number;
  /** Engine block hashes of the prompt (tokens.ts): what the engine's cache holds and serves. */
  readonly hashes: readonly number[];
  /**
   * The router's block hashes of the prompt, what the index is queried and fed with in approximate hashing.
   * `vllm` hashing keys the index by the engine's own hashes instead, so it needs none.
   */
  readonly indexHashes?: readonly BlockHash[];
}

/**
 * How the router names blocks, as the gateway's `kvcache.hashing`: `approximate`, its own hashes (indexHashes,
 * kvcache's default 64-token blocks), known to the index only through its own routing decisions; or `vllm`,
 * the engines' hashes (their 16-token blocks), recorded at routing as well and then corrected by each engine's KV
 * events (BlockStored, BlockRemoved), applied at the end of the step that caused them, as vLLM publishes them.
 */
export type IndexHashing = 'approximate' | 'vllm';

/**
 * What the gateway reports of engine load besides scrapes: `pending` is in-flight requests and pending prefill
 * tokens (EngineSnapshot.pendingPrefillTokens), `in-flight` the request counts alone.
 */
export type LoadSignal = 'pending' | 'in-flight';

export interface SimulationOptions {
  /** In arrival order. */
  readonly requests: readonly ReplayRequest[];
  readonly engines: number;
  readonly pipeline: RoutingPipeline;
  /** Starts empty; the simulation sets each engine's capacity. */
  readonly index: PrefixIndex;
  /** Default `approximate`. */
  readonly hashing?: IndexHashing;
  /** Tokens per block of indexHashes (approximate hashing), to tell the index how many an engine's KV holds. */
  readonly indexBlockTokens: number;
  readonly timing?: Partial<TimingParams>;
  readonly model?: string;
  /** Default `pending`. */
  readonly loadSignal?: LoadSignal;
  /** Default 1,000 ms, the gateway's default scrape interval. */
  readonly scrapeIntervalMs?: number;
  /** How often each engine's load is sampled for the load-over-time plot. Default: 1/400 of the arrival span. */
  readonly sampleIntervalMs?: number;
  /** Called as requests finish, with how many have and how many there are. */
  readonly onProgress?: (finished: number, total: number) => void;
}

export interface RequestOutcome {
  readonly arrivalMs: number;
  readonly engine: number;
  readonly reason: string | undefined;
  readonly promptTokens: number;
  readonly outputTokens: number;
  readonly cachedTokens: number;
  readonly firstTokenMs: number;
  readonly finishMs: number;
  /** What the placement step's engine model predicted for the chosen engine, at routing time (NaN if nothing). */
  readonly predictedTtftMs: number;
  readonly predictedE2eMs: number;
}

export interface LoadSample {
  readonly atMs: number;
  /** Requests in flight per engine. */
  readonly inFlight: readonly number[];
  /** Decode batch size per engine: the requests its last step ran. */
  readonly batch: readonly number[];
}

export interface SimulationResult {
  readonly policy: string;
  /** In the order of the requests given. */
  readonly outcomes: readonly RequestOutcome[];
  /** From the first arrival to the last finish. */
  readonly durationMs: number;
  /** Per engine, the engine's own counters (prefix hits as its cache actually served them). */
  readonly counters: readonly Readonly<TimingCounters>[];
  /** Per engine, in-flight requests averaged over the duration. */
  readonly meanInFlight: readonly number[];
  readonly samples: readonly LoadSample[];
  readonly reasons: Readonly<Record<string, number>>;
}

/** The one model the simulated fleet serves. */
export const REPLAY_MODEL = 'trace-model';

const DEFAULT_SCRAPE_INTERVAL_MS = 1000;
const SAMPLES = 400;

export async function simulate(opts: SimulationOptions): Promise<SimulationResult> {
  const { requests, pipeline, index } = opts;
  const n = opts.engines;
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`engines must be a positive integer, got ${n}`);
  const model = opts.model ?? REPLAY_MODEL;
  const scrapeIntervalMs = opts.scrapeIntervalMs ?? DEFAULT_SCRAPE_INTERVAL_MS;
  const first = requests.length === 0 ? 0 : requests[0].arrivalMs;
  const span = requests.length === 0 ? 0 : requests[requests.length - 1].arrivalMs - first;
  const sampleIntervalMs = opts.sampleIntervalMs ?? Math.max(1, span / SAMPLES);

  const precise = opts.hashing === 'vllm';
  const models = Array.from({ length: n }, () => new TimingModel(opts.timing, { recordCacheEvents: precise }));
  const specs: EngineSpec[] = models.map((_, i) => ({
    id: `engine-${i}`,
    url: `sim://engine-${i}`,
    kind: 'vllm',
    models: [model],
    labels: {},
  }));
  const { kvCapacityTokens, blockSize } = models[0].params;
  const capacityBlocks = Math.floor(kvCapacityTokens / (precise ? blockSize : opts.indexBlockTokens));
  for (const spec of specs) index.setCapacity(spec.id, capacityBlocks);

  const trackPending = (opts.loadSignal ?? 'pending') === 'pending';
  const inFlight = new Array<number>(n).fill(0);
  const pending = new Array<number>(n).fill(0);
  const pendingOf = new Float64Array(requests.length);
  const inFlightArea = new Array<number>(n).fill(0);
  const lastChange = new Array<number>(n).fill(first);
  const scraped: (EngineLoad | undefined)[] = new Array(n).fill(undefined);
  let nextScrapeMs = -Infinity;
  // When the engine's current step ends (its events are due and its next step starts); Infinity when idle.
  const stepEnds = new Array<number>(n).fill(Infinity);
  const inStep: (StepResult | undefined)[] = new Array(n).fill(undefined);
  const inStepCacheEvents: (readonly CacheEvent[])[] = new Array(n).fill([]);

  const byId = new Map<string, number>();
  const arrival = new Float64Array(requests.length);
  const engineOf = new Int32Array(requests.length);
  const reasonOf: (string | undefined)[] = new Array(requests.length);
  const cached = new Float64Array(requests.length);
  const firstToken = new Float64Array(requests.length).fill(NaN);
  const finish = new Float64Array(requests.length).fill(NaN);
  const reasons: Record<string, number> = {};
  const samples: LoadSample[] = [];
  let nextSampleMs = first;
  let finished = 0;
  let now = first;

  const changeInFlight = (e: number, delta: number, at: number) => {
    inFlightArea[e] += inFlight[e] * (at - lastChange[e]);
    lastChange[e] = at;
    inFlight[e] += delta;
  };

  const snapshots = (at: number): EngineSnapshot[] => {
    if (at >= nextScrapeMs) {
      for (let e = 0; e < n; e++) {
        const m = models[e];
        scraped[e] = { running: m.numRunning, waiting: m.numWaiting, kvUsage: m.kvUsage, scrapedAt: at };
      }
      nextScrapeMs = (Math.floor(at / scrapeIntervalMs) + 1) * scrapeIntervalMs;
    }
    return specs.map((spec, e) =>
      trackPending
        ? { spec, healthy: true, inFlight: inFlight[e], load: scraped[e], pendingPrefillTokens: pending[e] }
        : { spec, healthy: true, inFlight: inFlight[e], load: scraped[e] },
    );
  };

  const route = async (i: number, at: number) => {
    const request = requests[i];
    const blocks = precise ? request.hashes.map(BigInt) : request.indexHashes;
    if (blocks === undefined) throw new Error(`request ${request.id} has no router block hashes for approximate hashing`);
    const matches = await index.match(blocks);
    const features: RequestFeatures = {
      model,
      endpoint: 'completions',
      pools: undefined,
      exclude: new Set(),
      prefix: { totalBlocks: blocks.length, matches },
      promptTokens: request.promptTokens,
    };
    const decision = pipeline.route(features, snapshots(at));
    if (decision === undefined) throw new Error('the pipeline found no engine: every simulated engine is healthy and serves the model');
    const e = specs.indexOf(decision.engine.spec);
    index.recordStored(decision.engine.spec.id, blocks);
    const held = Math.min(blocks.length, matches.get(decision.engine.spec.id) ?? 0);
    pendingOf[i] = blocks.length === 0 ? request.promptTokens : Math.round(request.promptTokens * (1 - held / blocks.length));
    pending[e] += pendingOf[i];
    const reason = decision.reason ?? 'none';
    reasons[reason] = (reasons[reason] ?? 0) + 1;
    reasonOf[i] = decision.reason;
    engineOf[i] = e;
    arrival[i] = at;
    byId.set(request.id, i);
    models[e].submit({ id: request.id, promptTokens: request.promptTokens, outputTokens: request.outputTokens, blockHashes: request.hashes });
    changeInFlight(e, 1, at);
    if (stepEnds[e] === Infinity) stepEnds[e] = at;
  };

  const applyCacheEvents = (e: number, events: readonly CacheEvent[]) => {
    const id = specs[e].id;
    const removed: BlockHash[] = [];
    for (const event of events) {
      if (event.type === 'stored') index.recordStored(id, event.request.blockHashes.slice(event.fromBlock, event.toBlock).map(BigInt));
      else if (event.type === 'removed') removed.push(BigInt(event.hash));
      else index.clearEngine(id);
    }
    if (removed.length > 0) index.recordRemoved(id, removed);
  };

  const endStep = (e: number, at: number) => {
    applyCacheEvents(e, inStepCacheEvents[e]);
    inStepCacheEvents[e] = [];
    const step = inStep[e];
    if (step !== undefined) {
      for (const event of step.events) {
        const i = byId.get(event.id)!;
        if (event.type === 'first_token') {
          firstToken[i] = event.atMs;
          cached[i] = event.cachedTokens;
          pending[e] -= pendingOf[i];
        } else if (event.type === 'finished') {
          finish[i] = event.atMs;
          byId.delete(event.id);
          changeInFlight(e, -1, at);
          finished++;
          opts.onProgress?.(finished, requests.length);
        }
      }
    }
    const m = models[e];
    if (m.idle) {
      inStep[e] = undefined;
      stepEnds[e] = Infinity;
      return;
    }
    const next = m.step(at);
    if (next.durationMs === 0) throw new Error(`engine-${e} has queued requests but cannot run any`);
    inStep[e] = next;
    inStepCacheEvents[e] = m.takeCacheEvents();
    stepEnds[e] = at + next.durationMs;
  };

  let nextArrival = 0;
  for (;;) {
    const arrivalAt = nextArrival < requests.length ? requests[nextArrival].arrivalMs : Infinity;
    let engine = -1;
    let stepAt = Infinity;
    for (let e = 0; e < n; e++) {
      if (stepEnds[e] < stepAt) {
        stepAt = stepEnds[e];
        engine = e;
      }
    }
    const at = Math.min(arrivalAt, stepAt);
    if (at === Infinity) break;
    while (nextSampleMs <= at) {
      samples.push({ atMs: nextSampleMs, inFlight: inFlight.slice(), batch: inStep.map((step) => step?.batchSize ?? 0) });
      nextSampleMs += sampleIntervalMs;
    }
    now = at;
    if (arrivalAt <= stepAt) await route(nextArrival++, at);
    else endStep(engine, at);
  }

  const durationMs = now - first;
  const meanInFlight = inFlightArea.map((area, e) => (durationMs > 0 ? (area + inFlight[e] * (now - lastChange[e])) / durationMs : 0));
  const outcomes: RequestOutcome[] = requests.map((r, i) => ({
    arrivalMs: arrival[i],
    engine: engineOf[i],
    reason: reasonOf[i],
    promptTokens: r.promptTokens,
    outputTokens: r.outputTokens,
    cachedTokens: cached[i],
    firstTokenMs: firstToken[i],
    finishMs: finish[i],
    predictedTtftMs: NaN,
    predictedE2eMs: NaN,
  }));
  return {
    policy: pipeline.name,
    outcomes,
    durationMs,
    counters: models.map((m) => ({ ...m.counters })),
    meanInFlight,
    samples,
    reasons,
  };
}

/**
 * The token prefix-hit ratio of perfect partitioning: one LRU prefix cache with the capacity of all `engines`
 * together, serving the requests one at a time in arrival order (engine-sim's serveInstantly): every prefix kept
 * once, nothing pinned by running requests, no capacity lost to copies. A policy's hit ratio is measured against
 * it (LRU being no oracle, a lucky split can beat it slightly, but it is the ceiling in practice).
 */
export function perfectPartitionHitRatio(requests: readonly ReplayRequest[], engines: number, timing: Partial<TimingParams> = {}): number {
  const probe = new TimingModel(timing);
  const pool = new TimingModel({ ...timing, kvCapacityTokens: probe.params.kvCapacityTokens * engines });
  for (const r of requests) {
    pool.serveInstantly({ id: r.id, promptTokens: r.promptTokens, outputTokens: r.outputTokens, blockHashes: r.hashes });
  }
  const { prefixHitTokens, prefixQueryTokens } = pool.counters;
  return prefixQueryTokens === 0 ? 0 : prefixHitTokens / prefixQueryTokens;
}
