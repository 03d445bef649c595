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
}

/** Load as read from the engine's own /metrics, normalised across engine kinds. */
export interface EngineLoad {
  readonly running: number;
  readonly waiting: number;
  /** KV-cache usage, 0..1. */
  readonly kvUsage: number;
  /** Date.now() of the scrape that produced these values. */
  readonly scrapedAt: number;
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
}
