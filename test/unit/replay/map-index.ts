import type { BlockHash, PrefixIndex, PrefixMatches } from '../../../kvcache/types.js';

/**
 * A minimal PrefixIndex for the replayer's tests: per engine, the blocks it holds in recency order (a Map keeps
 * insertion order), the least recent forgotten beyond the engine's capacity.
 */
export class MapPrefixIndex implements PrefixIndex {
  private readonly held = new Map<string, Map<BlockHash, true>>();
  private readonly capacity = new Map<string, number>();

  async match(hashes: readonly BlockHash[]): Promise<PrefixMatches> {
    const matches = new Map<string, number>();
    for (const [engine, blocks] of this.held) {
      let n = 0;
      while (n < hashes.length && blocks.has(hashes[n])) n++;
      if (n > 0) matches.set(engine, n);
    }
    return matches;
  }

  recordStored(engineId: string, hashes: readonly BlockHash[]): void {
    let blocks = this.held.get(engineId);
    if (blocks === undefined) this.held.set(engineId, (blocks = new Map()));
    // Last block first, so a prefix's head is the most recently used, as the engine's own LRU keeps it.
    for (let i = hashes.length - 1; i >= 0; i--) {
      blocks.delete(hashes[i]);
      blocks.set(hashes[i], true);
    }
    const cap = this.capacity.get(engineId) ?? Infinity;
    for (const h of blocks.keys()) {
      if (blocks.size <= cap) break;
      blocks.delete(h);
    }
  }

  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void {
    const blocks = this.held.get(engineId);
    for (const h of hashes) blocks?.delete(h);
  }

  clearEngine(engineId: string): void {
    this.held.delete(engineId);
  }

  setCapacity(engineId: string, blocks: number): void {
    this.capacity.set(engineId, blocks);
  }

  async close(): Promise<void> {}
}
