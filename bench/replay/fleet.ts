import type { EngineSnapshot, EngineSpec } from '../../core/engine.js';
import type { TimingModel } from '../../engine-sim/timing-model.js';
import { InFlightLoad, type RequestLoad } from '../../router/placement/in-flight-load.js';
import type { PlacementFleet } from '../../router/placement/place.js';
import type { LoadSignal } from './simulate.js';

/**
 * The replayer's engines as the placement step sees them, kept the way the live registry keeps them: the gateway's
 * exact counts (router/placement/in-flight-load.ts, the registry's own), and running / waiting / KV usage from a
 * scrape every `scrapeIntervalMs`, so policies that rely on scraped load pay for its staleness here as they do live.
 */
export class SimulatedFleet implements PlacementFleet {
  readonly specs: readonly EngineSpec[];
  readonly #models: readonly TimingModel[];
  readonly #loads: InFlightLoad[];
  readonly #scraped: (EngineSnapshot['load'])[];
  readonly #trackPending: boolean;
  readonly #scrapeIntervalMs: number;
  readonly #byId: Map<string, number>;
  #nextScrapeMs = -Infinity;
  #nowMs = 0;
  #snapshots: readonly EngineSnapshot[] | undefined;

  constructor(models: readonly TimingModel[], model: string, loadSignal: LoadSignal, scrapeIntervalMs: number) {
    this.#models = models;
    this.specs = models.map((_, i) => ({ id: `engine-${i}`, url: `sim://engine-${i}`, kind: 'vllm', models: [model], labels: {} }));
    this.#byId = new Map(this.specs.map((s, i) => [s.id, i]));
    this.#loads = models.map(() => new InFlightLoad());
    this.#scraped = models.map(() => undefined);
    this.#trackPending = loadSignal === 'pending';
    this.#scrapeIntervalMs = scrapeIntervalMs;
  }

  indexOf(id: string): number {
    return this.#byId.get(id)!;
  }

  inFlight(e: number): number {
    return this.#loads[e].inFlight;
  }

  /** The virtual clock moved to `atMs`: decaying figures follow, and the engines' load is read when a scrape is due. */
  advance(atMs: number): void {
    if (atMs !== this.#nowMs) this.#snapshots = undefined;
    this.#nowMs = atMs;
    if (atMs < this.#nextScrapeMs) return;
    this.#models.forEach((m, e) => (this.#scraped[e] = { running: m.numRunning, waiting: m.numWaiting, kvUsage: m.kvUsage, scrapedAt: atMs }));
    this.#nextScrapeMs = (Math.floor(atMs / this.#scrapeIntervalMs) + 1) * this.#scrapeIntervalMs;
    this.#snapshots = undefined;
  }

  snapshot(): readonly EngineSnapshot[] {
    this.#snapshots ??= this.specs.map((spec, e) => {
      const { inFlight, pendingPrefillTokens, kvTokens, outputTokens } = this.#loads[e];
      const load = this.#scraped[e];
      const recentPrefillRate = this.#loads[e].recentPrefillRate(this.#nowMs);
      const prefillHeadAgeMs = this.#loads[e].prefillHeadAge(this.#nowMs);
      return this.#trackPending
        ? { spec, healthy: true, inFlight, load, pendingPrefillTokens, prefillHeadAgeMs, inFlightKvTokens: kvTokens, inFlightOutputTokens: outputTokens, recentPrefillRate }
        : { spec, healthy: true, inFlight, load };
    });
    return this.#snapshots;
  }

  acquire(id: string, load: RequestLoad): void {
    this.#loads[this.indexOf(id)].add(load, this.#nowMs);
    this.#snapshots = undefined;
  }

  prefillDone(id: string, load: RequestLoad): void {
    this.#loads[this.indexOf(id)].prefillDone(load, this.#nowMs);
    this.#snapshots = undefined;
  }

  release(id: string, load: RequestLoad): void {
    this.#loads[this.indexOf(id)].remove(load);
    this.#snapshots = undefined;
  }
}
