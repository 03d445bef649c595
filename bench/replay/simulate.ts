import { type CacheEvent, TimingModel, type StepResult, type TimingCounters, type TimingParams } from '../../engine-sim/timing-model.js';
import type { BlockHash, PrefixIndex } from '../../kvcache/types.js';
import { Calibration } from '../../router/placement/calibration.js';
import { OutputLengths } from '../../router/placement/output-length.js';
import { type PlacedRequest, Placement } from '../../router/placement/place.js';
import type { RoutingPipeline } from '../../router/routing/pipeline.js';
import type { EngineSources } from '../../router/routing/plugins.js';
import type { RequestFeatures } from '../../router/routing/types.js';
import { SimulatedFleet } from './fleet.js';
import type { Workload, WorkloadRequest } from './workload.js';

/**
 * Discrete-event simulation of a fleet behind the router, on a virtual clock: N engines, each the engine-sim
 * TimingModel (the same continuous-batching model the simulated engine runs), and the gateway's own placement step
 * (router/placement/place.ts: the routing pipeline, the engines' counts, the prefix index, calibration), with no
 * HTTP and no timers. Three kinds of events move the clock:
 *
 * - an arrival: the request's prefix is looked up in the index and the placement step places it, as the gateway
 *   does (it records the prompt's blocks for the chosen engine optimistically); the request joins that engine's
 *   queue;
 * - the end of an engine step: the step's tokens are emitted (first tokens, finishes), the placement step learns
 *   from them as the gateway does from an answer, and the engine starts its next step if it has work. A request
 *   arriving while a step runs joins the next one, as in vLLM;
 * - a closed-loop workload's user sends its next request when its last one finished (workload.ts).
 *
 * At equal times arrivals go first, so requests arriving together are batched together.
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
  readonly session?: string | undefined;
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
  readonly workload: Workload;
  /**
   * Hashes a workload request into what the engines and the index see (replay.ts); undefined when it can never
   * run on one engine: it is skipped and counted, and a closed-loop user goes on as if it had been answered.
   */
  readonly prepare: (request: WorkloadRequest, id: string) => ReplayRequest | undefined;
  readonly engines: number;
  /** Builds the policy over the engines' calibrated figures and the index's fills, as the gateway does. */
  readonly pipeline: (sources: EngineSources) => RoutingPipeline;
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
  /**
   * How often each engine's load is sampled for the plots. Default: 1/400 of the initial arrivals' span, doubled
   * whenever 800 samples are reached (closed loops), so a run keeps 400 to 800 of them.
   */
  readonly sampleIntervalMs?: number;
  /** Stops a closed-loop workload: no request arrives after it (virtual ms from the first arrival). */
  readonly maxDurationMs?: number;
  /** Called as requests finish, with how many have and how many are known so far. */
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
  /** What the placement step's engine model predicted for the chosen engine, at routing time. */
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
  /** In arrival order. */
  readonly outcomes: readonly RequestOutcome[];
  /** From the first arrival to the last finish. */
  readonly durationMs: number;
  /** Per engine, the engine's own counters (prefix hits as its cache actually served them). */
  readonly counters: readonly Readonly<TimingCounters>[];
  /** Per engine, in-flight requests averaged over the duration. */
  readonly meanInFlight: readonly number[];
  readonly samples: readonly LoadSample[];
  readonly reasons: Readonly<Record<string, number>>;
  /** Requests the workload gave that could never run on one engine. */
  readonly skipped: number;
  /** The requests replayed, in arrival order (a closed loop's depend on the policy). */
  readonly requests: readonly ReplayRequest[];
}

/** The one model the simulated fleet serves. */
export const REPLAY_MODEL = 'trace-model';

const DEFAULT_SCRAPE_INTERVAL_MS = 1000;
const SAMPLES = 400;
const REPLAY_TENANT = 'replay';

interface Running {
  readonly request: ReplayRequest;
  readonly source: WorkloadRequest;
  readonly engine: number;
  readonly placed: PlacedRequest;
  readonly outcome: number;
  cachedTokens: number;
  firstTokenMs: number;
}

export async function simulate(opts: SimulationOptions): Promise<SimulationResult> {
  const { workload, index } = opts;
  const n = opts.engines;
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`engines must be a positive integer, got ${n}`);
  const model = opts.model ?? REPLAY_MODEL;
  const initial = workload.initial;
  const first = initial.length === 0 ? 0 : initial[0].timestampMs;
  const span = initial.length === 0 ? 0 : initial[initial.length - 1].timestampMs - first;
  let sampleIntervalMs = opts.sampleIntervalMs ?? Math.max(1, span / SAMPLES);
  const stopArrivalsAt = first + (opts.maxDurationMs ?? Infinity);

  const precise = opts.hashing === 'vllm';
  const models = Array.from({ length: n }, () => new TimingModel(opts.timing, { recordCacheEvents: precise }));
  const fleet = new SimulatedFleet(models, model, opts.loadSignal ?? 'pending', opts.scrapeIntervalMs ?? DEFAULT_SCRAPE_INTERVAL_MS);
  const { kvCapacityTokens, blockSize } = models[0].params;
  const blockTokens = precise ? blockSize : opts.indexBlockTokens;
  for (const spec of fleet.specs) index.setCapacity(spec.id, Math.floor(kvCapacityTokens / blockTokens));
  const calibration = new Calibration(models[0].params);
  const pipeline = opts.pipeline({ perf: (engine) => calibration.perf(engine.spec), cacheFill: (engine) => index.fill(engine.spec.id) });
  const placement = new Placement({ pipeline, fleet, index, calibration, outputs: new OutputLengths(), blockTokens });
  const sessions = new Map<string, string>();

  const inFlightArea = new Array<number>(n).fill(0);
  // When the engine's current step ends (its events are due and its next step starts); Infinity when idle.
  const stepEnds = new Array<number>(n).fill(Infinity);
  const inStep: (StepResult | undefined)[] = new Array(n).fill(undefined);
  const inStepCacheEvents: (readonly CacheEvent[])[] = new Array(n).fill([]);

  // Arrivals not yet routed, sorted by time, latest first (pop() takes the next); closed-loop users add to it.
  const arrivals: WorkloadRequest[] = [...initial].reverse();
  const running = new Map<string, Running>();
  const outcomes: RequestOutcome[] = [];
  const replayed: ReplayRequest[] = [];
  const reasons: Record<string, number> = {};
  let samples: LoadSample[] = [];
  let nextSampleMs = first;
  let finished = 0;
  let skipped = 0;
  let nextId = 0;
  let now = first;

  const schedule = (request: WorkloadRequest | undefined) => {
    if (request === undefined || request.timestampMs > stopArrivalsAt) return;
    let at = arrivals.length;
    while (at > 0 && arrivals[at - 1].timestampMs < request.timestampMs) at--;
    arrivals.splice(at, 0, request);
  };

  // Integrates requests in flight over time, before each event changes them.
  let lastChange = first;
  const accumulate = (at: number) => {
    for (let e = 0; e < n; e++) inFlightArea[e] += fleet.inFlight(e) * (at - lastChange);
    lastChange = at;
  };

  const route = async (source: WorkloadRequest, at: number) => {
    const request = opts.prepare(source, `r${nextId++}`);
    if (request === undefined) {
      skipped++;
      schedule(workload.next?.(source, at));
      return;
    }
    const blocks = precise ? request.hashes.map(BigInt) : request.indexHashes;
    if (blocks === undefined) throw new Error(`request ${request.id} has no router block hashes for approximate hashing`);
    const matches = await index.match(blocks);
    const who = { tenant: REPLAY_TENANT, model };
    const features: RequestFeatures = {
      model,
      endpoint: 'completions',
      pools: undefined,
      exclude: new Set(),
      prefix: { totalBlocks: blocks.length, matches },
      promptTokens: request.promptTokens,
      outputTokens: placement.expectedOutput(who, undefined),
      sessionEngine: request.session === undefined ? undefined : sessions.get(request.session),
    };
    const placed = placement.place(features, { hashes: blocks, promptTokens: request.promptTokens, matches }, who, at);
    if (placed === undefined) throw new Error('the pipeline found no engine: every simulated engine is healthy and serves the model');
    const e = fleet.indexOf(placed.engineId);
    replayed.push(request);
    const reason = placed.decision.reason ?? 'none';
    reasons[reason] = (reasons[reason] ?? 0) + 1;
    running.set(request.id, { request, source, engine: e, placed, outcome: outcomes.length, cachedTokens: 0, firstTokenMs: NaN });
    outcomes.push({
      arrivalMs: at,
      engine: e,
      reason: placed.decision.reason,
      promptTokens: request.promptTokens,
      outputTokens: request.outputTokens,
      cachedTokens: NaN,
      firstTokenMs: NaN,
      finishMs: NaN,
      predictedTtftMs: placed.predictedTtftMs,
      predictedE2eMs: placed.predictedE2eMs,
    });
    models[e].submit({ id: request.id, promptTokens: request.promptTokens, outputTokens: request.outputTokens, blockHashes: request.hashes });
    if (stepEnds[e] === Infinity) stepEnds[e] = at;
  };

  const applyCacheEvents = (e: number, events: readonly CacheEvent[]) => {
    const id = fleet.specs[e].id;
    const removed: BlockHash[] = [];
    for (const event of events) {
      if (event.type === 'stored') index.recordStored(id, event.request.blockHashes.slice(event.fromBlock, event.toBlock).map(BigInt));
      else if (event.type === 'removed') removed.push(BigInt(event.hash));
      else index.clearEngine(id);
    }
    if (removed.length > 0) index.recordRemoved(id, removed);
  };

  const onFirstToken = (r: Running, atMs: number, cachedTokens: number) => {
    r.firstTokenMs = atMs;
    r.cachedTokens = cachedTokens;
    r.placed.firstToken(atMs);
    if (r.request.session !== undefined) sessions.set(r.request.session, r.placed.engineId);
  };

  const onFinished = (r: Running, atMs: number) => {
    running.delete(r.request.id);
    r.placed.finish({ atMs, completionTokens: r.request.outputTokens, cachedTokens: r.cachedTokens, streamed: true });
    outcomes[r.outcome] = { ...outcomes[r.outcome], cachedTokens: r.cachedTokens, firstTokenMs: r.firstTokenMs, finishMs: atMs };
    finished++;
    opts.onProgress?.(finished, outcomes.length + arrivals.length);
    schedule(workload.next?.(r.source, atMs));
  };

  const endStep = (e: number, at: number) => {
    applyCacheEvents(e, inStepCacheEvents[e]);
    inStepCacheEvents[e] = [];
    for (const event of inStep[e]?.events ?? []) {
      const r = running.get(event.id)!;
      if (event.type === 'first_token') onFirstToken(r, event.atMs, event.cachedTokens);
      else if (event.type === 'finished') onFinished(r, event.atMs);
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

  for (;;) {
    const arrivalAt = arrivals.length > 0 ? arrivals[arrivals.length - 1].timestampMs : Infinity;
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
      samples.push({ atMs: nextSampleMs, inFlight: fleet.specs.map((_, e) => fleet.inFlight(e)), batch: inStep.map((step) => step?.batchSize ?? 0) });
      nextSampleMs += sampleIntervalMs;
      // A closed loop runs far past its first arrivals' span: keep every other sample, twice as far apart.
      if (opts.sampleIntervalMs === undefined && samples.length >= 2 * SAMPLES) {
        samples = samples.filter((_, k) => k % 2 === 0);
        sampleIntervalMs *= 2;
        nextSampleMs = samples[samples.length - 1].atMs + sampleIntervalMs;
      }
    }
    accumulate(at);
    fleet.advance(at);
    now = at;
    if (arrivalAt <= stepAt) await route(arrivals.pop()!, at);
    else endStep(engine, at);
  }

  const durationMs = now - first;
  const meanInFlight = inFlightArea.map((area) => (durationMs > 0 ? area / durationMs : 0));
  return {
    policy: pipeline.name,
    outcomes,
    durationMs,
    counters: models.map((m) => ({ ...m.counters })),
    meanInFlight,
    samples,
    reasons,
    skipped,
    requests: replayed,
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
