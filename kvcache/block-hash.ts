/**
 * Block hashing for the router's approximate prefix index: a prompt's tokens are cut into blocks of `blockSize`,
 * and block i is named by xxHash64 of its token ids (uint32 in the platform's byte order, little-endian wherever
 * Switchyard runs; a golden-value test pins it) seeded with the hash of block i-1, so a hash names the whole prefix
 * up to the end of its block. The chain's root is the xxHash64 of the namespace (the
 * model, and the adapter if any: see blockNamespace), so two models never share a block however equal their
 * tokens. An incomplete tail block has no hash: no engine caches it either.
 *
 * Why xxHash64 from xxhash-wasm: measured on this machine over a 128K-token prompt (node, 200 runs, median), one
 * chained hash per block costs 89 ns at 16 tokens/block, 144 ns at 32, 179 ns at 64 with xxhash-wasm, against
 * 144, 238 and 243 ns with @node-rs/xxhash's native xxh64 (its N-API call costs more than the hashing itself at
 * these sizes); xxhash-wasm also needs no platform binary. Hashing a whole 128K-token prompt takes 0.55 to 0.7 ms
 * at 64-token blocks, far less than tokenizing it (see request-blocks.ts), so it runs in one go.
 *
 * DEFAULT_BLOCK_SIZE is 64 tokens, not vLLM's 16: the index stores one entry per (block, engine) and a lookup sends
 * and walks one hash per block, so 64 divides index memory, Redis payload (8 bytes per hash) and lookup time by 4
 * against 16 (see `npm run bench:index`), and 128K-token prompts stay at 2,048 hashes. What it costs is
 * granularity: a match is known to within 63 tokens, which is noise beside the shared system prompts and
 * conversation histories (hundreds to thousands of tokens) that prefix-aware routing is about, and prompts shorter
 * than 64 tokens get no affinity, which costs little because they are cheap to prefill anywhere. Precise mode
 * (hashes taken from engines' KV events) must use the engine's own block size instead.
 */

import xxhash from 'xxhash-wasm';
import type { BlockHash } from './types.js';

export const DEFAULT_BLOCK_SIZE = 64;

export interface BlockHashOptions {
  readonly blockSize: number;
  /** Separates KV that differs for the same tokens: blockNamespace(model, adapter). */
  readonly namespace: string;
}

const { h64, h64Raw } = await xxhash();

// Seeds the namespace hash so that the root differs from any hash of the same bytes used elsewhere.
const ROOT_SEED = 0x73776974636879n;

/** The namespace of a request's blocks: the base model, and the LoRA adapter when one is applied. */
export function blockNamespace(model: string, adapter?: string): string {
  return adapter === undefined ? model : `${model}\u0000${adapter}`;
}

/** The chained hashes of the full blocks of `tokens` (token ids below 2^32). */
export function promptBlockHashes(tokens: ArrayLike<number>, options: BlockHashOptions): BlockHash[] {
  const hasher = new BlockHasher(options);
  hasher.push(tokens);
  return hasher.hashes;
}

/**
 * promptBlockHashes for tokens that arrive in pieces (a long prompt tokenized segment by segment): pushing the
 * pieces in order gives the same hashes as hashing their concatenation.
 */
export class BlockHasher {
  /** Hashes of the full blocks pushed so far, root first. */
  readonly hashes: BlockHash[] = [];
  /** Tokens pushed so far, the incomplete tail block included. */
  tokenCount = 0;
  private readonly block: Uint32Array;
  // Byte view of `block`, made once: the hash reads it without a per-block allocation.
  private readonly blockBytes: Uint8Array;
  private filled = 0;
  private parent: BlockHash;

  constructor({ blockSize, namespace }: BlockHashOptions) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`blockSize must be a positive integer, got ${blockSize}`);
    this.block = new Uint32Array(blockSize);
    this.blockBytes = new Uint8Array(this.block.buffer);
    this.parent = h64(namespace, ROOT_SEED);
  }

  push(tokens: ArrayLike<number>): void {
    const block = this.block;
    const size = block.length;
    let filled = this.filled;
    for (let i = 0; i < tokens.length; i++) {
      block[filled++] = tokens[i]!;
      if (filled === size) {
        this.parent = h64Raw(this.blockBytes, this.parent);
        this.hashes.push(this.parent);
        filled = 0;
      }
    }
    this.filled = filled;
    this.tokenCount += tokens.length;
  }
}
