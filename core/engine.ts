/** The engine implementations whose metric names and adapter APIs Switchyard understands. */
export type EngineKind = 'vllm' | 'sglang' | 'llamacpp';

/** An engine as configured or discovered: where it is and what it serves. */
export interface EngineSpec {
  readonly id: string;
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:8001 */
  readonly url: string;
  readonly kind: EngineKind;
  readonly models: readonly string[];
  /** Free-form labels; `pool` names the compute pool the engine runs in. */
  readonly labels: Readonly<Record<string, string>>;
  /** KV-cache capacity in tokens, when known: bounds what the prefix index believes the engine holds. */
  readonly kvCapacityTokens?: number | undefined;
  /** ZMQ endpoint of the engine's KV events, when it publishes them. */
  readonly kvEventsEndpoint?: string | undefined;
  /** The engine's sidecar (switchyard sidecar), when it registered one: its adapter API is used then. */
  readonly sidecarUrl?: string | undefined;
  /** How fast this engine is believed to run before calibration has seen it; unset fields take routing.engineModel's. */
  readonly perf?: Partial<EnginePerf> | undefined;
}

/**
 * How fast a continuous-batching engine runs, in the form of engine-sim's timing model: one step (a forward pass
 * over the batch) takes decodeBaseMs + decodeMsPer1kKvTokens x (KV tokens the batch reads) / 1000, plus the time of
 * the prompt tokens it prefills at prefillTokensPerSec. Routing predicts latency from it; the gateway calibrates it
 * per engine from what it observes (router/placement/calibration.ts).
 */
export interface EnginePerf {
  readonly prefillTokensPerSec: number;
  readonly decodeBaseMs: number;
  readonly decodeMsPer1kKvTokens: number;
}

/**
 * Llama-3.1-8B in BF16 on one H100 80GB, the simulated engine's defaults (engine-sim/timing-model.ts says where
 * each figure comes from): the starting point of calibration when the configuration says nothing better.
 */
export const DEFAULT_ENGINE_PERF: Readonly<EnginePerf> = {
  prefillTokensPerSec: 30_000,
  decodeBaseMs: 6.5,
  decodeMsPer1kKvTokens: 0.044,
};

/** What an engine is believed to run at before it has answered: its own `perf` over the configured defaults. */
export function priorPerf(spec: EngineSpec, defaults: Readonly<EnginePerf> = DEFAULT_ENGINE_PERF): EnginePerf {
  return spec.perf === undefined ? defaults : { ...defaults, ...spec.perf };
}

/** Load as read from the engine's own /metrics, normalised across engine kinds. */
export interface EngineLoad {
  readonly running: number;
  readonly waiting: number;
  /** KV-cache usage, 0..1. */
  readonly kvUsage: number;
  /** Date.now() of the scrape that produced these values. */
  readonly scrapedAt: number;
  /**
   * The engine process's start, seconds since the epoch (Prometheus' `process_start_time_seconds`), when its
   * /metrics has it: a different value at a later scrape means the engine restarted with an empty cache.
   */
  readonly startedAt?: number;
}

/**
 * What routing sees of one engine at one instant. Policies are pure functions of these snapshots so the
 * live router and an offline replayer make the same decisions.
 */
export interface EngineSnapshot {
  readonly spec: EngineSpec;
  readonly healthy: boolean;
  /** Requests this gateway has sent to the engine and not yet finished. */
  readonly inFlight: number;
  /** Undefined until the first successful scrape. */
  readonly load: EngineLoad | undefined;
  /**
   * Prompt tokens the gateway sent to the engine and has not seen the first token of yet, less what the prefix
   * index expected cached: the prefill queued on the engine, known at once rather than at the next scrape.
   * Undefined where it is not tracked (the replayer's in-flight-only mode); routing then counts requests.
   */
  readonly pendingPrefillTokens?: number | undefined;
  /**
   * How long the engine has been computing the oldest of those prompts, ms (router/placement/in-flight-load.ts):
   * prefill is first come first served, so about that long times its prefill rate of the queue is done already.
   */
  readonly prefillHeadAgeMs?: number | undefined;
  /**
   * KV tokens the requests in flight hold, as the gateway counts them (each its prompt plus half its expected
   * output: its mean context over its life); with inFlightOutputTokens, what a decode step on the engine reads and
   * how long its batch will go on. Undefined where not tracked, as pendingPrefillTokens.
   */
  readonly inFlightKvTokens?: number | undefined;
  /** Output tokens the requests in flight are expected to generate in all. */
  readonly inFlightOutputTokens?: number | undefined;
  /**
   * Prompt tokens per second the gateway sent the engine to prefill lately (router/placement/in-flight-load.ts):
   * the share of its steps that prefill takes, which every decoding request waits through.
   */
  readonly recentPrefillRate?: number | undefined;
}
