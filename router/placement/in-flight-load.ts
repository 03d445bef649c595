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
 * Time constant of the recent prefill rate, ms: long enough to span the decode of a typical answer (a few hundred
 * steps), whose tokens wait for the prefill that arrives meanwhile; short enough to follow a burst.
 */
export const PREFILL_RATE_WINDOW_MS = 5000;

/**
 * The gateway's exact count of the work it has on one engine. The live registry keeps one per engine and so does
 * the replayer's simulated fleet: routing sees the same counts in both.
 */
export class InFlightLoad {
  inFlight = 0;
  pendingPrefillTokens = 0;
  kvTokens = 0;
  outputTokens = 0;
  // Prompt tokens sent to prefill, per ms, exponentially decaying: the value at #rateAtMs.
  #prefillRate = 0;
  #rateAtMs = 0;
  // Since when the engine has been working on the oldest prefill it has pending (the last first token, or since
  // its queue was empty): prefill is first come first served, so that much of the queue is done already.
  #headSinceMs = 0;

  /** How long the engine has been on the head of its prefill queue; 0 with nothing pending. */
  prefillHeadAge(nowMs: number): number {
    return this.pendingPrefillTokens > 0 ? Math.max(0, nowMs - this.#headSinceMs) : 0;
  }

  /** Prompt tokens per second sent here to prefill lately: what keeps this engine's steps busy with prefill. */
  recentPrefillRate(nowMs: number): number {
    return 1000 * this.#prefillRate * Math.exp(-Math.max(0, nowMs - this.#rateAtMs) / PREFILL_RATE_WINDOW_MS);
  }

  add(load: RequestLoad, nowMs: number): void {
    this.#prefillRate = this.recentPrefillRate(nowMs) / 1000 + load.prefillTokens / PREFILL_RATE_WINDOW_MS;
    this.#rateAtMs = nowMs;
    if (this.pendingPrefillTokens === 0) this.#headSinceMs = nowMs;
    this.inFlight++;
    this.pendingPrefillTokens += load.prefillTokens;
    this.kvTokens += load.kvTokens;
    this.outputTokens += load.outputTokens;
  }

  /** The request's prefill is over (first token) or will not happen (it failed). Call once, before remove(). */
  prefillDone(load: RequestLoad, nowMs: number): void {
    this.pendingPrefillTokens = Math.max(0, this.pendingPrefillTokens - load.prefillTokens);
    this.#headSinceMs = nowMs;
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
    this.#prefillRate = other.#prefillRate;
    this.#rateAtMs = other.#rateAtMs;
    this.#headSinceMs = other.#headSinceMs;
  }
}
