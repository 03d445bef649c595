import { describe, expect, it } from 'vitest';
import { type BlockId, blockHashes, PrefixCache } from '../../../engine-sim/prefix-cache.js';

const tokens = (start: number, count: number): number[] => Array.from({ length: count }, (_, i) => start + i);

/** Acquires fresh blocks for `hashes`, marks them computed, and returns them (still referenced). */
function compute(cache: PrefixCache, hashes: number[]): BlockId[] {
  const blocks: BlockId[] = [];
  expect(cache.acquire([], hashes.length, blocks)).toBe(true);
  hashes.forEach((hash, i) => cache.cacheBlock(blocks[i]!, hash));
  return blocks;
}

describe('blockHashes', () => {
  it('hashes full blocks only, each chained to its parent', () => {
    const hashes = blockHashes(tokens(0, 40), 16);
    expect(hashes).toHaveLength(2);
    // The same 16 tokens after a different first block hash differently: a hash names the whole prefix.
    const otherFirst = blockHashes([...tokens(1000, 16), ...tokens(16, 16)], 16);
    expect(otherFirst[1]).not.toBe(hashes[1]);
    // A shared prefix has shared hashes regardless of what follows.
    expect(blockHashes([...tokens(0, 32), 7, 7, 7], 16)).toEqual(hashes);
  });

  it('separates namespaces (LoRA adapters) for the same tokens', () => {
    const base = blockHashes(tokens(0, 32), 16);
    const adapterA = blockHashes(tokens(0, 32), 16, 'sql-lora');
    expect(adapterA).not.toEqual(base);
    expect(adapterA[0]).not.toBe(base[0]);
    expect(blockHashes(tokens(0, 32), 16, 'sql-lora')).toEqual(adapterA);
  });
});

describe('PrefixCache', () => {
  it('finds the longest cached prefix and stops at the first missing block', () => {
    const cache = new PrefixCache(16 * 10);
    const hashes = blockHashes(tokens(0, 64), 16);
    cache.release(compute(cache, hashes.slice(0, 3)));
    expect(cache.matchPrefix(hashes)).toHaveLength(3);
    expect(cache.matchPrefix(hashes, 2)).toHaveLength(2);
    // Diverging in the second block: only the first matches, even though later content was never compared.
    const diverging = blockHashes([...tokens(0, 16), ...tokens(500, 48)], 16);
    expect(cache.matchPrefix(diverging)).toHaveLength(1);
    expect(cache.matchPrefix(blockHashes(tokens(900, 64), 16))).toHaveLength(0);
  });

  it('shares matched blocks between requests by reference, without copying', () => {
    const cache = new PrefixCache(16 * 10);
    const hashes = blockHashes(tokens(0, 48), 16);
    const first = compute(cache, hashes);
    const second: BlockId[] = [];
    expect(cache.acquire(cache.matchPrefix(hashes), 1, second)).toBe(true);
    expect(second.slice(0, 3)).toEqual(first);
    expect(cache.numUsedBlocks).toBe(4);
    cache.release(first);
    expect(cache.numUsedBlocks).toBe(4);
    cache.release(second);
    expect(cache.numUsedBlocks).toBe(0);
    // Released blocks keep their content for later requests.
    expect(cache.matchPrefix(hashes)).toHaveLength(3);
  });

  it('evicts the least recently used unreferenced blocks first', () => {
    const cache = new PrefixCache(16 * 4);
    const a = blockHashes(tokens(0, 32), 16);
    const b = blockHashes(tokens(100, 32), 16);
    cache.release(compute(cache, a));
    cache.release(compute(cache, b));
    // Reuse A, so B becomes the least recently used.
    const reuse: BlockId[] = [];
    cache.acquire(cache.matchPrefix(a), 0, reuse);
    cache.release(reuse);
    cache.release(compute(cache, blockHashes(tokens(200, 32), 16)));
    expect(cache.matchPrefix(a)).toHaveLength(2);
    expect(cache.matchPrefix(b)).toHaveLength(0);
  });

  it('never evicts referenced blocks: allocation fails instead, changing nothing', () => {
    const cache = new PrefixCache(16 * 4);
    const held = compute(cache, blockHashes(tokens(0, 48), 16));
    const extra: BlockId[] = [];
    expect(cache.acquire([], 2, extra)).toBe(false);
    expect(extra).toEqual([]);
    expect(cache.numUsedBlocks).toBe(3);
    expect(cache.matchPrefix(blockHashes(tokens(0, 48), 16))).toHaveLength(3);
    expect(cache.acquire([], 1, extra)).toBe(true);
    expect(held).not.toContain(extra[0]);
  });

  it('counts matched blocks sitting in the free queue against the free space', () => {
    const cache = new PrefixCache(16 * 4);
    const hashes = blockHashes(tokens(0, 48), 16);
    cache.release(compute(cache, hashes));
    // 4 free blocks, 3 of them the prefix: taking the prefix leaves room for 1 fresh block, not 2.
    expect(cache.acquire(cache.matchPrefix(hashes), 2, [])).toBe(false);
    expect(cache.numUsedBlocks).toBe(0);
    expect(cache.acquire(cache.matchPrefix(hashes), 1, [])).toBe(true);
    expect(cache.numUsedBlocks).toBe(4);
  });

  it('evicts the end of a released sequence before its beginning', () => {
    const cache = new PrefixCache(16 * 4);
    const hashes = blockHashes(tokens(0, 64), 16);
    cache.release(compute(cache, hashes));
    // Two fresh blocks must come from the tail of the released sequence, keeping its shared beginning.
    cache.release(compute(cache, blockHashes(tokens(900, 32), 16)));
    expect(cache.matchPrefix(hashes)).toHaveLength(2);
  });

  it('is bounded by its capacity in tokens, rounded down to whole blocks', () => {
    const cache = new PrefixCache(16 * 5 + 10);
    expect(cache.numBlocks).toBe(5);
    const all: BlockId[] = [];
    expect(cache.acquire([], 6, all)).toBe(false);
    expect(cache.acquire([], 5, all)).toBe(true);
    expect(new Set(all).size).toBe(5);
    expect(cache.usage).toBe(1);
    expect(cache.acquire([], 1, [])).toBe(false);
    // Caching many distinct prefixes over time never holds more than the pool.
    cache.release(all);
    for (let i = 0; i < 50; i++) cache.release(compute(cache, blockHashes(tokens(i * 1000, 32), 16)));
    expect(cache.numCachedBlocks).toBeLessThanOrEqual(5);
    expect(() => new PrefixCache(10)).toThrow(RangeError);
  });

  it('keeps the first copy when two blocks compute the same prefix', () => {
    const cache = new PrefixCache(16 * 4);
    const hashes = blockHashes(tokens(0, 16), 16);
    const first = compute(cache, hashes);
    const second = compute(cache, hashes);
    expect(cache.matchPrefix(hashes)).toEqual(first);
    cache.release(second);
    cache.release(first);
    expect(cache.numCachedBlocks).toBe(1);
  });
});
