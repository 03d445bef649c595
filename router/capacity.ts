import type { Config } from '../core/config.js';
import type { EngineRegistry } from './engines/registry.js';

/**
 * Decides whether a request may leave the fair queue now: some engine that could serve its model is not
 * saturated. A request let through is counted here until it takes an engine's in-flight slot (or gives up),
 * because it does so only after an await: without this count, one pump would let every waiting request through
 * on the strength of the same free slot.
 */
export class CapacityGate {
  readonly #registry: EngineRegistry;
  readonly #saturation: Config['queue']['saturation'];
  readonly #pools: ReadonlyMap<string, readonly string[]>;
  /** Requests let through per model that hold no engine slot yet. */
  readonly #granted = new Map<string, number>();

  constructor(registry: EngineRegistry, saturation: Config['queue']['saturation'], pools: ReadonlyMap<string, readonly string[]>) {
    this.#registry = registry;
    this.#saturation = saturation;
    this.#pools = pools;
  }

  /** True, and counted until release(), when the model has room; false when every engine serving it is saturated. */
  tryTake(model: string): boolean {
    const granted = this.#granted.get(model) ?? 0;
    if (this.#freeSlots(model) <= granted) return false;
    this.#granted.set(model, granted + 1);
    return true;
  }

  /** The request let through has taken an engine slot, or will not. */
  release(model: string): void {
    const granted = (this.#granted.get(model) ?? 0) - 1;
    if (granted > 0) this.#granted.set(model, granted);
    else this.#granted.delete(model);
  }

  /**
   * Requests the model's engines can still take: the sum of in-flight room over engines not saturated by their
   * scraped signals (unbounded without maxInFlight). No candidate engine at all counts as room, so that such a
   * request goes on to get its 404 or 503 from routing rather than wait.
   */
  #freeSlots(model: string): number {
    const { maxInFlight, maxWaiting, maxKvUsage } = this.#saturation;
    const pools = this.#pools.get(model);
    let candidates = 0;
    let free = 0;
    for (const e of this.#registry.snapshot()) {
      if (!e.healthy || !e.spec.models.includes(model)) continue;
      if (pools !== undefined && !pools.includes(e.spec.labels.pool ?? '')) continue;
      candidates++;
      if (e.load !== undefined && ((maxWaiting !== undefined && e.load.waiting >= maxWaiting) || (maxKvUsage !== undefined && e.load.kvUsage >= maxKvUsage))) continue;
      if (maxInFlight === undefined) return Infinity;
      free += Math.max(0, maxInFlight - e.inFlight);
    }
    return candidates === 0 ? Infinity : free;
  }
}
