/**
 * The KV-cache block pool of one engine with automatic prefix caching, modelled on vLLM V1's BlockPool:
 *
 * - KV memory is cut into blocks of `blockSize` tokens (16 by default, vLLM's default on GPUs).
 * - A full block is identified by the hash of its tokens chained with the hash of the block before it, so a hash
 *   names a whole prefix, not just 16 tokens; a LoRA adapter's name seeds the chain because its KV differs.
 * - Running requests hold references on their blocks. A block nobody references stays in the pool with its
 *   content (a later request with the same prefix reuses it) until it is evicted to make room: the free queue is
 *   LRU, and only unreferenced blocks are ever in it.
 *
 * State lives in typed arrays and one Map so a pool of hundreds of thousands of tokens costs little memory and no
 * per-block objects; the trace replayer builds many of these.
 */

import { hashInts, hashString } from '../core/hash.js';

export type BlockHash = number;
export type BlockId = number;

export const DEFAULT_BLOCK_SIZE = 16;

const ROOT_HASH = 0;
const NAMESPACE_SEED = 0x6c6f7261;
const NO_BLOCK = -1;

/**
 * Chained hashes of the full blocks of `tokens` (a trailing partial block has none). `namespace` separates KV
 * that differs for the same tokens, e.g. the LoRA adapter that produced it; '' is the base model.
 */
export function blockHashes(tokens: ArrayLike<number>, blockSize: number, namespace = ''): BlockHash[] {
  const count = Math.floor(tokens.length / blockSize);
  const hashes: BlockHash[] = new Array(count);
  let parent = namespace === '' ? ROOT_HASH : hashString(namespace, NAMESPACE_SEED);
  for (let i = 0; i < count; i++) {
    parent = hashInts(parent, tokens, i * blockSize, (i + 1) * blockSize);
    hashes[i] = parent;
  }
  return hashes;
}

export class PrefixCache {
  readonly blockSize: number;
  readonly numBlocks: number;
  private readonly refCount: Int32Array;
  // NaN marks a block whose content is not (or no longer) reusable.
  private readonly contentHash: Float64Array;
  // Doubly linked free queue over block ids: head is evicted first, released blocks join at the tail.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NO_BLOCK;
  private tail = NO_BLOCK;
  private readonly byHash = new Map<BlockHash, BlockId>();
  private used = 0;

  /** `onEvict` hears of every cached block evicted to make room (the engine's KV events report it). */
  constructor(
    capacityTokens: number,
    blockSize = DEFAULT_BLOCK_SIZE,
    private readonly onEvict: ((hash: BlockHash) => void) | undefined = undefined,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`blockSize must be a positive integer, got ${blockSize}`);
    const numBlocks = Math.floor(capacityTokens / blockSize);
    if (!(numBlocks >= 1)) throw new RangeError(`KV capacity of ${capacityTokens} tokens holds no ${blockSize}-token block`);
    this.blockSize = blockSize;
    this.numBlocks = numBlocks;
    this.refCount = new Int32Array(numBlocks);
    this.contentHash = new Float64Array(numBlocks).fill(NaN);
    this.prev = new Int32Array(numBlocks);
    this.next = new Int32Array(numBlocks);
    for (let b = 0; b < numBlocks; b++) this.appendToFreeQueue(b);
  }

  /** Blocks referenced by at least one running request. */
  get numUsedBlocks(): number {
    return this.used;
  }

  /** Blocks that can be handed out: never used, or holding cached content nobody references. */
  get numFreeBlocks(): number {
    return this.numBlocks - this.used;
  }

  /** Blocks whose content can be reused by a matching prefix, referenced or not. */
  get numCachedBlocks(): number {
    return this.byHash.size;
  }

  /** Fraction of blocks referenced by running requests, as vLLM's kv_cache_usage_perc (cached-but-free is free). */
  get usage(): number {
    return this.used / this.numBlocks;
  }

  /**
   * The blocks holding the longest cached prefix of `hashes`, at most `maxBlocks` of them. No side effect: the LRU
   * order changes only when the blocks are acquired.
   */
  matchPrefix(hashes: readonly BlockHash[], maxBlocks = hashes.length): BlockId[] {
    const limit = Math.min(maxBlocks, hashes.length);
    const blocks: BlockId[] = [];
    for (let i = 0; i < limit; i++) {
      const block = this.byHash.get(hashes[i]!);
      if (block === undefined) break;
      blocks.push(block);
    }
    return blocks;
  }

  /**
   * References the `prefix` blocks (from matchPrefix) and `count` fresh ones, appending them to `into`. Fresh blocks
   * come from the head of the free queue, evicting the least recently used cached content. All or nothing: when
   * there are not enough free blocks it returns false and changes nothing.
   */
  acquire(prefix: readonly BlockId[], count: number, into: BlockId[]): boolean {
    let prefixFromFreeQueue = 0;
    for (const block of prefix) if (this.refCount[block] === 0) prefixFromFreeQueue++;
    if (count > this.numFreeBlocks - prefixFromFreeQueue) return false;
    for (const block of prefix) {
      if (this.refCount[block]++ === 0) {
        this.unlinkFromFreeQueue(block);
        this.used++;
      }
      into.push(block);
    }
    for (let i = 0; i < count; i++) {
      const block = this.head;
      this.unlinkFromFreeQueue(block);
      this.forgetContent(block);
      this.refCount[block] = 1;
      this.used++;
      into.push(block);
    }
    return true;
  }

  /**
   * Records that `block`, now completely computed, holds the prefix named by `hash`. If another block already holds
   * it (two requests computed the same prefix concurrently) the first copy stays the cached one and this block
   * is recycled as anonymous when released, as vLLM does.
   */
  cacheBlock(block: BlockId, hash: BlockHash): void {
    if (this.byHash.has(hash) || !Number.isNaN(this.contentHash[block]!)) return;
    this.contentHash[block] = hash;
    this.byHash.set(hash, block);
  }

  /**
   * Forgets all cached content, as vLLM's reset_prefix_cache. Refused (false, nothing changes) while running
   * requests reference blocks, as there.
   */
  reset(): boolean {
    if (this.used > 0) return false;
    this.byHash.clear();
    this.contentHash.fill(NaN);
    return true;
  }

  /**
   * Drops one reference from each block. Blocks nobody references join the free queue, keeping their content. A
   * sequence's last block is queued first so it is evicted first: the end of a prompt is the part least likely to
   * be shared, its beginning (system prompt, documents) the most.
   */
  release(blocks: readonly BlockId[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const block = blocks[i]!;
      if (--this.refCount[block]! === 0) {
        this.used--;
        this.appendToFreeQueue(block);
      }
    }
  }

  private forgetContent(block: BlockId): void {
    const hash = this.contentHash[block]!;
    if (Number.isNaN(hash)) return;
    this.byHash.delete(hash);
    this.contentHash[block] = NaN;
    this.onEvict?.(hash);
  }

  private appendToFreeQueue(block: BlockId): void {
    this.prev[block] = this.tail;
    this.next[block] = NO_BLOCK;
    if (this.tail === NO_BLOCK) this.head = block;
    else this.next[this.tail] = block;
    this.tail = block;
  }

  private unlinkFromFreeQueue(block: BlockId): void {
    const before = this.prev[block]!;
    const after = this.next[block]!;
    if (before === NO_BLOCK) this.head = after;
    else this.next[before] = after;
    if (after === NO_BLOCK) this.tail = before;
    else this.prev[after] = before;
  }
}
