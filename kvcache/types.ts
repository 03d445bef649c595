/**
 * A block's hash: 64 bits, chained over its prefix (the hash of block i covers blocks 0..i). In approximate
 * mode the router computes it with a fast non-cryptographic hash; in precise mode it is the engine's own block
 * hash (vLLM: SHA-256 over canonical CBOR, low 64 bits), so engine KV events and router lookups agree.
 */
export type BlockHash = bigint;

/** How many leading blocks of a prompt each engine (probably) holds. Engines holding none are absent. */
export type PrefixMatches = ReadonlyMap<string, number>;

/**
 * The KV-cache index: block hash -> engines that hold it. One interface, two backends (in-process and
 * Redis); the in-process one may front the Redis one.
 *
 * Bounded: memory is limited by configuration whatever the traffic, and per engine the index never believes
 * an engine holds more blocks than its KV capacity (its oldest blocks are forgotten first).
 */
export interface PrefixIndex {
  /**
   * For each engine, the number of leading blocks of `hashes` it holds (a chain: block i counts only if blocks
   * 0..i-1 do). One round trip to the backend whatever the prompt length.
   */
  match(hashes: readonly BlockHash[]): Promise<PrefixMatches>;
  /** The engine now holds these blocks (the router's own decision, or a BlockStored event). Never blocks the caller. */
  recordStored(engineId: string, hashes: readonly BlockHash[]): void;
  /** The engine evicted these blocks (a BlockRemoved event). */
  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void;
  /** The engine holds nothing any more (AllBlocksCleared, a restart, or removal from the fleet). */
  clearEngine(engineId: string): void;
  /** Sets how many blocks the engine can hold; beyond it the oldest are forgotten. */
  setCapacity(engineId: string, blocks: number): void;
  /**
   * The share of the engine's capacity the index believes in use, 0 to 1; 0 while its capacity is unknown. Routing
   * weighs a prefix copy by it: on an engine whose cache is full, a copy evicts prefixes others would hit.
   * May be up to a second old (the Redis index reads it in the background); never blocks.
   */
  fill(engineId: string): number;
  /** Writes out anything batched, then releases connections. */
  close(): Promise<void>;
}
