/** How the registry concluded that an engine restarted. */
export type RestartReason = 'health' | 'start_time';

/**
 * Decides, from what the registry observes of one engine, when its process restarted: its KV cache is then empty,
 * whatever the prefix index believes (llama.cpp sends no KV events to say so).
 *
 * - start_time: a successful scrape shows a process start (EngineLoad.startedAt) other than the last one seen.
 *   This is the evidence to trust when the engine exports it: it catches a restart quicker than the probes, and
 *   tells a restart from an engine that was only unreachable for a while (its cache intact).
 * - health: an engine that had been admitted failed probeFailureThreshold probes in a row (the process was down)
 *   and a probe admits it again, when no start time is known to settle it. When one is known, the verdict waits for
 *   the scrape that follows the re-admission: a changed start time is the restart, an unchanged one is not, and a
 *   start time that vanished counts as one.
 *
 * A passive ejection alone (failed requests while /health kept answering) is not a restart: the process, and its
 * cache, lived on. It becomes one when probes then fail too.
 */
export class RestartWatch {
  #admitted = false;
  /** Probes failed in a row since the engine was last admitted; the verdict is pending. */
  #probedDown = false;
  #startedAt: number | undefined;

  /** probeFailureThreshold probes in a row have failed. */
  probesDown(): void {
    if (this.#admitted) this.#probedDown = true;
  }

  /** A probe admits the engine; 'health' when that ends an outage of the process and no start time can judge it. */
  admitted(): RestartReason | undefined {
    this.#admitted = true;
    if (!this.#probedDown || this.#startedAt !== undefined) return undefined;
    this.#probedDown = false;
    return 'health';
  }

  /** A scrape of the healthy engine succeeded, with the start time it showed if any. */
  scraped(startedAt: number | undefined): RestartReason | undefined {
    const pending = this.#probedDown;
    const before = this.#startedAt;
    this.#probedDown = false;
    if (startedAt !== undefined) this.#startedAt = startedAt;
    if (before === undefined) return undefined;
    if (startedAt === undefined) return pending ? 'health' : undefined;
    return startedAt === before ? undefined : 'start_time';
  }
}
