/**
 * The in-process prefix index (the embedded default): one slab of entries, an entry meaning "engine E holds block
 * B", each entry linked into three doubly linked lists:
 *
 * - its block's holders, reached through `holders: Map<BlockHash, first entry>`: what match() walks;
 * - its engine's entries, oldest first: what the capacity model trims (an engine never holds more than its
 *   capacity; its least recently seen blocks are forgotten first);
 * - all entries, oldest first: what the global bound trims (least recently seen first, whichever engine).
 *
 * The slab is a set of typed arrays indexed by entry number, grown by doubling up to the bound, so the index costs
 * no object per entry (only the Map's BigInt key per block) and gives the garbage collector little to walk. Bounds:
 *
 *   entries <= min(maxEntries, maxBytes / ENTRY_BYTES)
 *
 * where ENTRY_BYTES is the measured cost of one entry plus, in the worst case where no two entries share a block,
 * one `holders` key (see `npm run bench:index`, which measures the heap per entry). Per engine, entries <=
 * capacity (setCapacity; unbounded until set). Engines stay known by id with their capacity after clearEngine (a
 * few dozen bytes each), so a restarted engine keeps its capacity.
 *
 * Recency: recordStored walks the chain deepest block first, so a prompt's root ends as the most recently seen of
 * its blocks and trimming cuts chains from the leaf, keeping the shared prefixes that matter most, as vLLM's free
 * queue evicts a request's tail blocks first. match() reads without touching recency: a lookup is no evidence
 * that an engine still holds a block.
 */

import type { BlockHash, PrefixIndex, PrefixMatches } from '../types.js';
import { entryBound, requireCapacity } from './bounds.js';

/**
 * Heap bytes per entry in the worst case, where no two engines share a block: 7 Int32 slab slots (28 B), a
 * reference to the hash (8 B), and a `holders` Map slot with its BigInt key. `npm run bench:index` measures 84 B
 * (57 B when 4 engines hold each block); rounded up.
 */
export const ENTRY_BYTES = 96;

export interface LocalPrefixIndexOptions {
  /** Most (block, engine) entries held, all engines together. */
  readonly maxEntries: number;
  /** Approximate heap budget: caps entries at maxBytes / ENTRY_BYTES too. */
  readonly maxBytes?: number;
}

const NONE = -1;
const INITIAL_SLAB = 1024;

interface EngineEntries {
  readonly id: string;
  readonly slot: number;
  capacity: number;
  count: number;
  oldest: number;
  newest: number;
}

export class LocalPrefixIndex implements PrefixIndex {
  /** The bound on entries, from maxEntries and maxBytes. */
  readonly maxEntries: number;
  private entryCount = 0;

  // The slab. `engineOf[e]` is the engine slot of entry e; `hashOf[e]` its block.
  private engineOf = new Int32Array(0);
  private holderPrev = new Int32Array(0);
  private holderNext = new Int32Array(0);
  private enginePrev = new Int32Array(0);
  private engineNext = new Int32Array(0);
  private lruPrev = new Int32Array(0);
  // Also links the free list of recycled entries.
  private lruNext = new Int32Array(0);
  private readonly hashOf: BlockHash[] = [];
  private slabUsed = 0;
  private freeHead = NONE;
  private lruOldest = NONE;
  private lruNewest = NONE;

  private readonly holders = new Map<BlockHash, number>();
  private readonly engineSlots = new Map<string, number>();
  private readonly engines: EngineEntries[] = [];
  // match() scratch: leading blocks per engine slot, and the slots touched by the current lookup.
  private matched = new Int32Array(0);
  private readonly touched: number[] = [];

  constructor(options: LocalPrefixIndexOptions) {
    this.maxEntries = entryBound(options.maxEntries, options.maxBytes, ENTRY_BYTES);
  }

  /** Entries (block, engine) and distinct blocks held now. */
  stats(): { entries: number; blocks: number } {
    return { entries: this.entryCount, blocks: this.holders.size };
  }

  match(hashes: readonly BlockHash[]): Promise<PrefixMatches> {
    return Promise.resolve(this.lookup(hashes));
  }

  private lookup(hashes: readonly BlockHash[]): PrefixMatches {
    const result = new Map<string, number>();
    const first = hashes.length === 0 ? undefined : this.holders.get(hashes[0]!);
    if (first === undefined) return result;
    const matched = this.matched;
    const touched = this.touched;
    for (let e = first; e !== NONE; e = this.holderNext[e]!) {
      const slot = this.engineOf[e]!;
      matched[slot] = 1;
      touched.push(slot);
    }
    // An engine is still in the running after block i only if it held blocks 0..i; stop when none is.
    let running = touched.length;
    for (let i = 1; i < hashes.length && running > 0; i++) {
      const head = this.holders.get(hashes[i]!);
      if (head === undefined) break;
      running = 0;
      for (let e = head; e !== NONE; e = this.holderNext[e]!) {
        const slot = this.engineOf[e]!;
        if (matched[slot] === i) {
          matched[slot] = i + 1;
          running++;
        }
      }
    }
    for (const slot of touched) {
      result.set(this.engines[slot]!.id, matched[slot]!);
      matched[slot] = 0;
    }
    touched.length = 0;
    return result;
  }

  recordStored(engineId: string, hashes: readonly BlockHash[]): void {
    const engine = this.engines[this.engineSlot(engineId)]!;
    if (engine.capacity === 0) return;
    for (let i = hashes.length - 1; i >= 0; i--) this.store(engine, hashes[i]!);
  }

  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void {
    const slot = this.engineSlots.get(engineId);
    if (slot === undefined) return;
    for (const hash of hashes) {
      const entry = this.find(slot, hash);
      if (entry !== NONE) this.remove(entry);
    }
  }

  clearEngine(engineId: string): void {
    const slot = this.engineSlots.get(engineId);
    if (slot !== undefined) this.trim(this.engines[slot]!, 0);
  }

  fill(engineId: string): number {
    const slot = this.engineSlots.get(engineId);
    const engine = slot === undefined ? undefined : this.engines[slot]!;
    return engine === undefined || engine.capacity === Infinity || engine.capacity === 0 ? 0 : engine.count / engine.capacity;
  }

  setCapacity(engineId: string, blocks: number): void {
    requireCapacity(blocks);
    const engine = this.engines[this.engineSlot(engineId)]!;
    engine.capacity = blocks;
    this.trim(engine, blocks);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private store(engine: EngineEntries, hash: BlockHash): void {
    const slot = engine.slot;
    const existing = this.find(slot, hash);
    if (existing !== NONE) {
      this.unlinkRecency(existing);
      this.linkRecency(existing, engine);
      return;
    }
    // Make room first: an eviction may be the block's only holder and so change its list head.
    if (engine.count >= engine.capacity) this.remove(engine.oldest);
    if (this.entryCount >= this.maxEntries) this.remove(this.lruOldest);
    const entry = this.allocate();
    this.engineOf[entry] = slot;
    this.hashOf[entry] = hash;
    const head = this.holders.get(hash) ?? NONE;
    this.holderPrev[entry] = NONE;
    this.holderNext[entry] = head;
    if (head !== NONE) this.holderPrev[head] = entry;
    this.holders.set(hash, entry);
    this.linkRecency(entry, engine);
    engine.count++;
    this.entryCount++;
  }

  /** The entry for (engine slot, block), or NONE. A block's holders are at most the fleet, usually a few. */
  private find(slot: number, hash: BlockHash): number {
    let e = this.holders.get(hash) ?? NONE;
    while (e !== NONE && this.engineOf[e] !== slot) e = this.holderNext[e]!;
    return e;
  }

  private remove(entry: number): void {
    const prev = this.holderPrev[entry]!;
    const next = this.holderNext[entry]!;
    if (next !== NONE) this.holderPrev[next] = prev;
    if (prev !== NONE) this.holderNext[prev] = next;
    else if (next !== NONE) this.holders.set(this.hashOf[entry]!, next);
    else this.holders.delete(this.hashOf[entry]!);
    const engine = this.engines[this.engineOf[entry]!]!;
    this.unlinkRecency(entry);
    engine.count--;
    this.entryCount--;
    // A constant keeps the array's element kind and lets the block's BigInt be collected.
    this.hashOf[entry] = 0n;
    this.lruNext[entry] = this.freeHead;
    this.freeHead = entry;
  }

  private trim(engine: EngineEntries, keep: number): void {
    while (engine.count > keep) this.remove(engine.oldest);
  }

  /** Appends the entry as the newest of its engine's list and of the global list. */
  private linkRecency(entry: number, engine: EngineEntries): void {
    this.enginePrev[entry] = engine.newest;
    this.engineNext[entry] = NONE;
    if (engine.newest !== NONE) this.engineNext[engine.newest] = entry;
    else engine.oldest = entry;
    engine.newest = entry;
    this.lruPrev[entry] = this.lruNewest;
    this.lruNext[entry] = NONE;
    if (this.lruNewest !== NONE) this.lruNext[this.lruNewest] = entry;
    else this.lruOldest = entry;
    this.lruNewest = entry;
  }

  private unlinkRecency(entry: number): void {
    const engine = this.engines[this.engineOf[entry]!]!;
    const ePrev = this.enginePrev[entry]!;
    const eNext = this.engineNext[entry]!;
    if (ePrev !== NONE) this.engineNext[ePrev] = eNext;
    else engine.oldest = eNext;
    if (eNext !== NONE) this.enginePrev[eNext] = ePrev;
    else engine.newest = ePrev;
    const gPrev = this.lruPrev[entry]!;
    const gNext = this.lruNext[entry]!;
    if (gPrev !== NONE) this.lruNext[gPrev] = gNext;
    else this.lruOldest = gNext;
    if (gNext !== NONE) this.lruPrev[gNext] = gPrev;
    else this.lruNewest = gPrev;
  }

  private allocate(): number {
    if (this.freeHead !== NONE) {
      const entry = this.freeHead;
      this.freeHead = this.lruNext[entry]!;
      return entry;
    }
    if (this.slabUsed === this.engineOf.length) this.growSlab();
    return this.slabUsed++;
  }

  private growSlab(): void {
    const size = Math.min(this.maxEntries, Math.max(INITIAL_SLAB, this.engineOf.length * 2));
    const grow = (old: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
      const next = new Int32Array(size);
      next.set(old);
      return next;
    };
    this.engineOf = grow(this.engineOf);
    this.holderPrev = grow(this.holderPrev);
    this.holderNext = grow(this.holderNext);
    this.enginePrev = grow(this.enginePrev);
    this.engineNext = grow(this.engineNext);
    this.lruPrev = grow(this.lruPrev);
    this.lruNext = grow(this.lruNext);
  }

  private engineSlot(engineId: string): number {
    let slot = this.engineSlots.get(engineId);
    if (slot === undefined) {
      slot = this.engines.length;
      this.engines.push({ id: engineId, slot, capacity: Infinity, count: 0, oldest: NONE, newest: NONE });
      this.engineSlots.set(engineId, slot);
      if (this.matched.length <= slot) {
        const matched = new Int32Array(Math.max(16, this.matched.length * 2));
        matched.set(this.matched);
        this.matched = matched;
      }
    }
    return slot;
  }
}
