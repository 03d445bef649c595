import { LRUCache } from 'lru-cache';
import type { BlockHash } from '../../kvcache/types.js';

/**
 * How many requests lately shared a prefix, named by its last block: an exponentially decaying count per block.
 * A copy of a prefix onto another engine is paid once and serves every later request that shares it there, so
 * routing spreads it over them (RequestFeatures.prefix.recentSharers): a system prompt in front of every request
 * is worth copying to every engine, a prefix two requests share is not.
 */

/** Time constant of the counts, ms: a copy pays back within seconds or not at all. */
export const HEAT_WINDOW_MS = 10_000;
/** Prefixes remembered; a cold one forgotten costs nothing. */
const MAX_PREFIXES = 10_000;

export class PrefixHeat {
  readonly #counts = new LRUCache<BlockHash, { count: number; atMs: number }>({ max: MAX_PREFIXES });

  /** Requests that shared the prefix ending at `block` over about the last HEAT_WINDOW_MS. */
  sharers(block: BlockHash, nowMs: number): number {
    const entry = this.#counts.get(block);
    return entry === undefined ? 0 : entry.count * Math.exp(-Math.max(0, nowMs - entry.atMs) / HEAT_WINDOW_MS);
  }

  touch(block: BlockHash, nowMs: number): void {
    this.#counts.set(block, { count: this.sharers(block, nowMs) + 1, atMs: nowMs });
  }
}
