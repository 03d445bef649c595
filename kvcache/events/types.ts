/**
 * vLLM's KV cache events (vllm/distributed/kv_events.py), as a decoded batch. Field names are vLLM's, so that the
 * map encoding is these objects and the array encoding is their fields in this order.
 *
 * vLLM defines them as msgspec structs with tag=True and omit_defaults=True, encoded with msgpack. Earlier versions
 * were also array_like=True, so each event travels as an array led by its tag:
 *
 *   KVEventBatch      [ts, events, data_parallel_rank?]
 *   BlockStored       ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name, ...]
 *   BlockRemoved      ["BlockRemoved", block_hashes, medium, ...]
 *   AllBlocksCleared  ["AllBlocksCleared"]
 *
 * Current vLLM main has dropped array_like: the batch is a map {ts, events, data_parallel_rank} and each event a map with
 * its tag under "type": {"type": "BlockStored", "block_hashes": [...], ...}. Both are accepted. Fields that
 * appeared over time (medium, lora_name, then extra_keys, group_idx, kv_cache_spec_*) are optional on input and
 * anything past the ones below is ignored.
 *
 * Block hashes arrive as ints (older vLLM, or VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1 on current vLLM; producers
 * may send them as signed int64) or as bytes (current vLLM's default: ExternalBlockHash = bytes | int, the 32-byte
 * digest). Both are normalised to a BlockHash: the low 64 bits of the integer, two's complement for a
 * negative one, or the last 8 bytes of the bytes read big-endian. That is vLLM's own int conversion
 * (maybe_convert_block_hash) and llm-d's (getHashAsUint64), and the 64 bits kvcache/precise-hash keeps.
 */

import type { BlockHash } from '../types.js';

export const BLOCK_STORED = 'BlockStored';
export const BLOCK_REMOVED = 'BlockRemoved';
export const ALL_BLOCKS_CLEARED = 'AllBlocksCleared';

/** vLLM's medium for blocks in GPU memory; offloading connectors report others (e.g. "CPU"). */
export const MEDIUM_GPU = 'GPU';

export interface BlockStored {
  readonly type: typeof BLOCK_STORED;
  /** The newly cached blocks, in prefix order; each hash chains all blocks before it. */
  readonly block_hashes: readonly BlockHash[];
  /** The block before the first of block_hashes, null when they start the sequence. */
  readonly parent_block_hash: BlockHash | null;
  /** The blocks' tokens, block_size per block. */
  readonly token_ids: readonly number[];
  readonly block_size: number;
  /** vLLM's integer id of the LoRA adapter (deprecated there in favour of lora_name). */
  readonly lora_id: number | null;
  readonly medium: string | null;
  readonly lora_name: string | null;
}

export interface BlockRemoved {
  readonly type: typeof BLOCK_REMOVED;
  readonly block_hashes: readonly BlockHash[];
  readonly medium: string | null;
}

export interface AllBlocksCleared {
  readonly type: typeof ALL_BLOCKS_CLEARED;
}

export type KvEvent = BlockStored | BlockRemoved | AllBlocksCleared;

export interface KvEventBatch {
  /** Seconds since the epoch when the engine step that produced the events ended (vLLM: time.time()). */
  readonly ts: number;
  readonly events: readonly KvEvent[];
  /** The data-parallel rank whose scheduler produced the batch; each rank publishes on its own port. */
  readonly data_parallel_rank?: number;
}

/** The two msgpack layouts of the same batch: positional arrays (msgspec array_like) or maps. */
export type KvEventEncoding = 'array' | 'map';
