/**
 * What every router replica and the adapters controller share about LoRA adapters: where each one is resident
 * (or loading, or failed to load), how much demand each has, and which controller may act. One interface, two
 * stores: Redis (production, many replicas) and in-process (the embedded default).
 */

export type AdapterState = 'loading' | 'resident' | 'unloading' | 'failed';

/** One adapter on one engine. */
export interface AdapterPlacement {
  readonly engine: string;
  readonly adapter: string;
  readonly state: AdapterState;
  /** Why it failed, for `failed`. */
  readonly reason?: string;
  /** ms since epoch of the last change. */
  readonly since: number;
}

export interface AdapterStateStore {
  /** Every placement known, all engines. */
  placements(): Promise<AdapterPlacement[]>;
  /** Sets one adapter's state on one engine. */
  setPlacement(placement: AdapterPlacement): Promise<void>;
  /** Forgets one adapter on one engine (unloaded). */
  removePlacement(engine: string, adapter: string): Promise<void>;
  /**
   * Takes the right to load `adapter` somewhere for `ttlMs` (a cold start): true for exactly one caller across
   * replicas until it releases or the time passes, so concurrent requests for one cold adapter make one load.
   */
  claimLoad(adapter: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLoad(adapter: string, holder: string): Promise<void>;
  /** Counts one request for the adapter (the controller places by demand). */
  recordDemand(adapter: string): Promise<void>;
  /** Requests per adapter over about the last minute, and when each was last requested (ms since epoch). */
  demand(): Promise<Map<string, { readonly perMinute: number; readonly lastUsed: number }>>;
  /**
   * The controller lease: true while `holder` holds it (taken, or renewed by its holder) for `ttlMs`; another
   * holder gets it only once it expired, so a dead controller is replaced within ttlMs and two never both act.
   */
  acquireLease(holder: string, ttlMs: number): Promise<boolean>;
  releaseLease(holder: string): Promise<void>;
  close(): Promise<void>;
}
