/** What one request adds to its engine's load while it is there (see EngineSnapshot for each count's meaning). */
export interface RequestLoad {
  /** Prompt tokens it is expected to prefill: counted until its first token. */
  readonly prefillTokens: number;
  /** Its mean context over its life: prompt plus half its expected output. */
  readonly kvTokens: number;
  readonly outputTokens: number;
}

export const NO_LOAD: RequestLoad = { prefillTokens: 0, kvTokens: 0, outputTokens: 0 };

/**
 * The gateway's exact count of the work it has on one engine. The live registry keeps one per engine and so does
 * the replayer's simulated fleet: routing sees the same counts in both.
 */
export class InFlightLoad {
  inFlight = 0;
  pendingPrefillTokens = 0;
  kvTokens = 0;
  outputTokens = 0;

  add(load: RequestLoad): void {
    this.inFlight++;
    this.pendingPrefillTokens += load.prefillTokens;
    this.kvTokens += load.kvTokens;
    this.outputTokens += load.outputTokens;
  }

  /** The request's prefill is over (first token) or will not happen (it failed). Call once, before remove(). */
  prefillDone(load: RequestLoad): void {
    this.pendingPrefillTokens = Math.max(0, this.pendingPrefillTokens - load.prefillTokens);
  }

  remove(load: RequestLoad): void {
    if (this.inFlight === 0) return;
    this.inFlight--;
    // Sums of floats drift: an engine with nothing in flight holds nothing.
    if (this.inFlight === 0) {
      this.pendingPrefillTokens = this.kvTokens = this.outputTokens = 0;
      return;
    }
    this.kvTokens = Math.max(0, this.kvTokens - load.kvTokens);
    this.outputTokens = Math.max(0, this.outputTokens - load.outputTokens);
  }

  /** Carries the counts of requests still running over to a replacement record of the same engine. */
  copyFrom(other: InFlightLoad): void {
    this.inFlight = other.inFlight;
    this.pendingPrefillTokens = other.pendingPrefillTokens;
    this.kvTokens = other.kvTokens;
    this.outputTokens = other.outputTokens;
  }
}
