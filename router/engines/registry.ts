import type { EngineLoad, EngineSnapshot, EngineSpec } from '../../core/engine.js';
import { InFlightLoad, type RequestLoad } from '../placement/in-flight-load.js';
import { EngineClient } from './engine-client.js';
import { parseEngineLoad } from './engine-metrics.js';
import { RestartWatch, type RestartReason } from './restart-watch.js';

/** How stale a snapshot's time-dependent figures (recent prefill rate, queue-head age) may get, ms. */
const SNAPSHOT_REFRESH_MS = 100;

export interface EngineRegistryOptions {
  readonly healthIntervalMs: number;
  readonly healthTimeoutMs: number;
  readonly scrapeIntervalMs: number;
  readonly scrapeTimeoutMs: number;
  /** Consecutive failed proxied requests (reportFailure) that eject a healthy engine. Default 3. */
  readonly failureThreshold?: number;
  /** Consecutive failed active probes that mark a healthy engine unhealthy. Default 2. */
  readonly probeFailureThreshold?: number;
  /** Called on every transition, including the first successful probe. Must not throw. */
  readonly onHealthChange?: (id: string, healthy: boolean) => void;
  /** Called after a scrape stored an engine's new load (the fair queue re-checks saturation then). Must not throw. */
  readonly onLoad?: (id: string) => void;
  /** Called when a scrape fails (transport, status, or no load metrics in the text). Must not throw. */
  readonly onScrapeError?: (id: string, err: Error) => void;
  /** Called when the engine's process restarted, so its cache is empty (restart-watch.ts says how). Must not throw. */
  readonly onRestart?: (id: string, why: RestartReason) => void;
  /** Inference connections per engine (EngineClientOptions.connections). */
  readonly connections?: number;
}

interface EngineState {
  spec: EngineSpec;
  client: EngineClient;
  healthy: boolean;
  readonly inFlight: InFlightLoad;
  load: EngineLoad | undefined;
  probeFailures: number;
  requestFailures: number;
  /** Bumped by each passive ejection, so a probe that was already in flight cannot undo it. */
  ejections: number;
  probing: boolean;
  scraping: boolean;
  readonly restarts: RestartWatch;
  /** Immutable view of the fields above, rebuilt on each change. */
  snapshot: EngineSnapshot;
}

/**
 * The live set of engines: health, in-flight counts and scraped load, exposed to routing as snapshots.
 *
 * Health semantics:
 * - An engine is unhealthy until its first successful probe. start() awaits that first round, so nothing is
 *   routed on a guess, and an engine added by setEngines() joins only once it answers.
 * - Active probes: an unhealthy engine is admitted by one successful probe. A healthy one is marked unhealthy
 *   after probeFailureThreshold (default 2) consecutive failed probes, not at once: under overload /health
 *   can miss its timeout on every engine together, and ejecting them all on one slow answer would turn
 *   saturation into a full outage. A dead engine is caught sooner by passive ejection when it has traffic.
 * - Passive ejection: failureThreshold (default 3) consecutive reportFailure() calls mark the engine unhealthy
 *   at once; reportSuccess() resets the count. Only an active probe started after the ejection re-admits it.
 *   An engine whose /health passes while its requests keep failing therefore cycles out and back once per
 *   probe interval, which bounds the damage to failureThreshold requests per interval.
 * - Load is scraped only from healthy engines, cleared when an engine turns unhealthy (it may have restarted)
 *   and scraped again as soon as a probe re-admits it. A failed scrape keeps the last load (scrapedAt shows
 *   its age) and never affects health: metrics may simply be disabled on the engine.
 * - Restarts: onRestart is called when the probes and scrapes show that the engine's process restarted, from
 *   a changed process start time or from an outage of the process (restart-watch.ts).
 */
export class EngineRegistry {
  readonly #opts: EngineRegistryOptions;
  readonly #failureThreshold: number;
  readonly #probeFailureThreshold: number;
  #engines = new Map<string, EngineState>();
  /** Cached snapshot() result; undefined after any change. */
  #snapshots: readonly EngineSnapshot[] | undefined;
  #refreshedAt = 0;
  #healthTimer: NodeJS.Timeout | undefined;
  #scrapeTimer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;
  #closing: Promise<void> | undefined;

  constructor(specs: readonly EngineSpec[], opts: EngineRegistryOptions) {
    for (const key of ['healthIntervalMs', 'healthTimeoutMs', 'scrapeIntervalMs', 'scrapeTimeoutMs'] as const) {
      positive(key, opts[key]);
    }
    this.#opts = opts;
    this.#failureThreshold = positiveInteger('failureThreshold', opts.failureThreshold ?? 3);
    this.#probeFailureThreshold = positiveInteger('probeFailureThreshold', opts.probeFailureThreshold ?? 2);
    uniqueIds(specs);
    for (const spec of specs) this.#engines.set(spec.id, this.#newState(spec));
  }

  /** Runs one probe round (and a scrape of each engine found healthy), resolves when done, then runs on intervals. */
  async start(): Promise<void> {
    if (this.#started || this.#stopped) throw new Error('engine registry already started or stopped');
    this.#started = true;
    await this.#probeAll();
    if (this.#stopped) return;
    this.#healthTimer = setInterval(() => void this.#probeAll(), this.#opts.healthIntervalMs).unref();
    this.#scrapeTimer = setInterval(() => void this.#scrapeAll(), this.#opts.scrapeIntervalMs).unref();
  }

  /** Clears the timers and closes every client; requests already dispatched finish first. */
  stop(): Promise<void> {
    if (this.#closing === undefined) {
      this.#stopped = true;
      clearInterval(this.#healthTimer);
      clearInterval(this.#scrapeTimer);
      this.#closing = Promise.all(Array.from(this.#engines.values(), (s) => s.client.close())).then(() => undefined);
    }
    return this.#closing;
  }

  /**
   * Current snapshots, in the order the engines were given. The same array is returned until something
   * changes; snapshots are immutable, so one held by a routing decision keeps describing that instant.
   */
  snapshot(): readonly EngineSnapshot[] {
    // Prefill rates and queue-head ages move with time: every engine's snapshot is refreshed that often, whether or
    // not anything changed (a rebuild after one engine's change leaves the others' as they were).
    const now = performance.now();
    if (Math.abs(now - this.#refreshedAt) > SNAPSHOT_REFRESH_MS) {
      for (const state of this.#engines.values()) state.snapshot = freeze(state, now);
      this.#snapshots = undefined;
      this.#refreshedAt = now;
    }
    this.#snapshots ??= Array.from(this.#engines.values(), (s) => s.snapshot);
    return this.#snapshots;
  }

  client(id: string): EngineClient {
    const state = this.#engines.get(id);
    if (state === undefined) throw new Error(`unknown engine "${id}"`);
    return state.client;
  }

  // acquire/release/report* ignore unknown ids: an engine removed by setEngines() may still be finishing the
  // requests the proxy sent it, and their completion must not throw.

  /** A request goes to the engine with `load` (router/placement/in-flight-load.ts). */
  acquire(id: string, load: RequestLoad): void {
    const state = this.#engines.get(id);
    if (state === undefined) return;
    state.inFlight.add(load, performance.now());
    this.#changed(state);
  }

  /** The request's prefill is over (its first token came) or will not happen (it failed): no longer queued. */
  prefillDone(id: string, load: RequestLoad): void {
    const state = this.#engines.get(id);
    if (state === undefined || load.prefillTokens === 0) return;
    state.inFlight.prefillDone(load, performance.now());
    this.#changed(state);
  }

  release(id: string, load: RequestLoad): void {
    const state = this.#engines.get(id);
    if (state === undefined || state.inFlight.inFlight === 0) return;
    state.inFlight.remove(load);
    this.#changed(state);
  }

  /** A proxied request failed in a way that implicates the engine (connection error, 5xx before the first byte). */
  reportFailure(id: string): void {
    const state = this.#engines.get(id);
    if (state === undefined) return;
    state.requestFailures++;
    if (state.healthy && state.requestFailures >= this.#failureThreshold) {
      state.ejections++;
      this.#setHealthy(state, false);
    }
  }

  reportSuccess(id: string): void {
    const state = this.#engines.get(id);
    if (state !== undefined) state.requestFailures = 0;
  }

  /**
   * Replaces the engine set. Engines no longer listed disappear from snapshots at once and their clients are
   * closed; new ones start unhealthy and are probed right away when the registry is running. An engine whose
   * spec changed gets a new client; it keeps its health and counters unless its url changed.
   * Resolves when new engines have been probed and removed clients closed — the latter waits for the requests
   * still running on them.
   */
  async setEngines(specs: readonly EngineSpec[]): Promise<void> {
    if (this.#stopped) throw new Error('engine registry stopped');
    uniqueIds(specs);
    const next = new Map<string, EngineState>();
    const closing: EngineClient[] = [];
    const added: EngineState[] = [];
    for (const spec of specs) {
      const state = this.#engines.get(spec.id);
      if (state === undefined || state.spec.url !== spec.url) {
        const fresh = this.#newState(spec);
        if (state !== undefined) {
          closing.push(state.client);
          // Requests still running at the old url will release against this id: keep counting them.
          fresh.inFlight.copyFrom(state.inFlight);
          fresh.snapshot = freeze(fresh, performance.now());
        }
        next.set(spec.id, fresh);
        added.push(fresh);
        continue;
      }
      if (!sameSpec(state.spec, spec)) {
        closing.push(state.client);
        state.spec = spec;
        state.client = new EngineClient(spec, this.#clientOptions());
        this.#changed(state);
      }
      next.set(spec.id, state);
    }
    for (const [id, state] of this.#engines) {
      if (!next.has(id)) closing.push(state.client);
    }
    this.#engines = next;
    this.#snapshots = undefined;
    const running = this.#started && !this.#stopped;
    await Promise.all([...closing.map((c) => c.close()), ...(running ? added.map((s) => this.#probe(s)) : [])]);
  }

  #newState(spec: EngineSpec): EngineState {
    return {
      spec,
      client: new EngineClient(spec, this.#clientOptions()),
      healthy: false,
      inFlight: new InFlightLoad(),
      load: undefined,
      probeFailures: 0,
      requestFailures: 0,
      ejections: 0,
      probing: false,
      scraping: false,
      restarts: new RestartWatch(),
      snapshot: { spec, healthy: false, inFlight: 0, pendingPrefillTokens: 0, inFlightKvTokens: 0, inFlightOutputTokens: 0, load: undefined },
    };
  }

  #clientOptions(): { connections?: number } {
    return this.#opts.connections === undefined ? {} : { connections: this.#opts.connections };
  }

  /** True while `state` is still the registry's record for its engine (not removed or replaced). */
  #current(state: EngineState): boolean {
    return !this.#stopped && this.#engines.get(state.spec.id) === state;
  }

  #changed(state: EngineState): void {
    state.snapshot = freeze(state, performance.now());
    this.#snapshots = undefined;
  }

  #setHealthy(state: EngineState, healthy: boolean): void {
    state.healthy = healthy;
    if (!healthy) state.load = undefined;
    this.#changed(state);
    this.#opts.onHealthChange?.(state.spec.id, healthy);
  }

  #restarted(state: EngineState, why: RestartReason | undefined): void {
    if (why !== undefined) this.#opts.onRestart?.(state.spec.id, why);
  }

  async #probeAll(): Promise<void> {
    await Promise.allSettled(Array.from(this.#engines.values(), (s) => this.#probe(s)));
  }

  async #scrapeAll(): Promise<void> {
    await Promise.allSettled(Array.from(this.#engines.values(), (s) => this.#scrape(s)));
  }

  async #probe(state: EngineState): Promise<void> {
    // A probe slower than the interval must not stack up behind itself.
    if (state.probing) return;
    state.probing = true;
    const ejections = state.ejections;
    let ok: boolean;
    try {
      ok = await state.client.probeHealth(this.#opts.healthTimeoutMs);
    } finally {
      state.probing = false;
    }
    if (!this.#current(state)) return;
    if (!ok) {
      state.probeFailures++;
      if (state.probeFailures < this.#probeFailureThreshold) return;
      state.restarts.probesDown();
      if (state.healthy) this.#setHealthy(state, false);
      return;
    }
    state.probeFailures = 0;
    if (state.healthy || state.ejections !== ejections) return;
    state.requestFailures = 0;
    // Before admitting it, so no request is routed on what the engine held before its restart.
    this.#restarted(state, state.restarts.admitted());
    this.#setHealthy(state, true);
    await this.#scrape(state);
  }

  async #scrape(state: EngineState): Promise<void> {
    if (state.scraping || !state.healthy) return;
    state.scraping = true;
    try {
      const text = await state.client.scrapeMetrics(this.#opts.scrapeTimeoutMs);
      const load = parseEngineLoad(state.spec.kind, text, Date.now());
      // The engine may have been ejected while the scrape was in flight; its load stays cleared then.
      if (this.#current(state) && state.healthy) {
        state.load = load;
        this.#changed(state);
        this.#restarted(state, state.restarts.scraped(load.startedAt));
        this.#opts.onLoad?.(state.spec.id);
      }
    } catch (err) {
      if (this.#current(state)) this.#opts.onScrapeError?.(state.spec.id, err instanceof Error ? err : new Error(String(err)));
    } finally {
      state.scraping = false;
    }
  }
}

function freeze(state: EngineState, nowMs: number): EngineSnapshot {
  const load = state.inFlight;
  return {
    spec: state.spec,
    healthy: state.healthy,
    inFlight: load.inFlight,
    pendingPrefillTokens: load.pendingPrefillTokens,
    inFlightKvTokens: load.kvTokens,
    inFlightOutputTokens: load.outputTokens,
    recentPrefillRate: load.recentPrefillRate(nowMs),
    prefillHeadAgeMs: load.prefillHeadAge(nowMs),
    load: state.load,
  };
}

function sameSpec(a: EngineSpec, b: EngineSpec): boolean {
  if (a.url !== b.url || a.kind !== b.kind || a.sidecarUrl !== b.sidecarUrl || a.models.length !== b.models.length) return false;
  for (let i = 0; i < a.models.length; i++) if (a.models[i] !== b.models[i]) return false;
  const aKeys = Object.keys(a.labels);
  if (aKeys.length !== Object.keys(b.labels).length) return false;
  for (const key of aKeys) if (a.labels[key] !== b.labels[key]) return false;
  return true;
}

function uniqueIds(specs: readonly EngineSpec[]): void {
  const seen = new Set<string>();
  for (const spec of specs) {
    if (seen.has(spec.id)) throw new Error(`duplicate engine id "${spec.id}"`);
    seen.add(spec.id);
  }
}

function positive(name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) throw new Error(`engine registry: ${name} must be a positive number, got ${value}`);
}

function positiveInteger(name: string, value: number): number {
  if (!(Number.isInteger(value) && value >= 1)) throw new Error(`engine registry: ${name} must be a positive integer, got ${value}`);
  return value;
}
