import type { EngineSnapshot } from '../../core/engine.js';

/** What routing knows about a request. Kept small and serialisable so a replayer can build it from a trace. */
export interface RequestFeatures {
  readonly model: string;
  readonly endpoint: 'chat' | 'completions' | 'embeddings';
  /** Compute pools the model may run in (from the model's placement in config); undefined means any. */
  readonly pools: readonly string[] | undefined;
  /** Engines already tried for this request (retries go elsewhere). */
  readonly exclude: ReadonlySet<string>;
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
}

/** Chooses one engine from the scored candidates. May keep state (a round-robin cursor), never I/O. */
export interface Picker {
  readonly name: string;
  pick(request: RequestFeatures, engines: readonly EngineSnapshot[], scores: readonly number[]): EngineSnapshot;
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
}
