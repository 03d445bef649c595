import type { EngineSnapshot } from '../../core/engine.js';

/** What routing knows about a request. Kept small and serialisable so a replayer can build it from a trace. */
export interface RequestFeatures {
  /** The base model the engines serve (for an adapter request, the adapter's base model). */
  readonly model: string;
  /** The LoRA adapter the request names, and the engines where it is resident now. */
  readonly adapter?: { readonly name: string; readonly residentOn: ReadonlySet<string> };
  readonly endpoint: 'chat' | 'completions' | 'embeddings';
  /** Compute pools the model may run in (from the model's placement in config); undefined means any. */
  readonly pools: readonly string[] | undefined;
  /** Engines already tried for this request (retries go elsewhere). */
  readonly exclude: ReadonlySet<string>;
  /** The prompt's indexed blocks and how many leading ones each engine holds; absent when not computed. */
  readonly prefix?: {
    readonly totalBlocks: number;
    readonly matches: ReadonlyMap<string, number>;
    /**
     * Requests that shared the longest matched prefix lately (placement/prefix-heat.ts): how many a copy of it
     * would serve. Absent: unknown, counted as none.
     */
    readonly recentSharers?: number | undefined;
  };
  /** The engine that last served this request's session, when the request carries a session key. */
  readonly sessionEngine?: string;
  /**
   * The prompt's length in tokens as the gateway counted it (kvcache's PromptBlocks.promptTokens, or the TPM
   * estimate); with engines' pendingPrefillTokens it lets a prefix match be weighed against queued work in tokens.
   */
  readonly promptTokens?: number;
  /** Output tokens expected (router/placement/output-length.ts): max_tokens capped by what the tenant's requests produce. */
  readonly outputTokens?: number;
}

/** Narrows the candidate set. Must return a subset of its input, in the same order. */
export interface Filter {
  readonly name: string;
  filter(request: RequestFeatures, engines: readonly EngineSnapshot[]): EngineSnapshot[];
}

/** Scores each candidate in [0, 1]; higher is better. Returns one score per engine, in the same order. */
export interface Scorer {
  readonly name: string;
  score(request: RequestFeatures, engines: readonly EngineSnapshot[]): number[];
  /** See Picker.explain. */
  explain?(request: RequestFeatures, engines: readonly EngineSnapshot[], chosen: EngineSnapshot): string | undefined;
}

/** Chooses one engine from the scored candidates. May keep state (a round-robin cursor), never I/O. */
export interface Picker {
  readonly name: string;
  pick(request: RequestFeatures, engines: readonly EngineSnapshot[], scores: readonly number[]): EngineSnapshot;
  /**
   * Why `chosen` was chosen, as this plugin sees it: a short fixed label (`prefix-hit`, `miss-least-loaded`, ...)
   * for the "routing decisions by reason" metric, or undefined when the plugin had no say in the choice.
   */
  explain?(request: RequestFeatures, engines: readonly EngineSnapshot[], chosen: EngineSnapshot): string | undefined;
}

export interface WeightedScorer {
  readonly scorer: Scorer;
  readonly weight: number;
}

/** The outcome of one routing decision, with what is needed to explain it in metrics and traces. */
export interface RoutingDecision {
  readonly engine: EngineSnapshot;
  readonly policy: string;
  readonly candidates: number;
  readonly score: number;
  /** Why this engine: the picker's explanation, else the first scorer's (in configuration order) that has one. */
  readonly reason?: string;
}
