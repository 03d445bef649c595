/**
 * msgpack encoding of vLLM's KVEventBatch, both layouts (see types.ts). Decoding is strict about what the index
 * needs and lenient about the rest: a malformed batch fails as a whole with a KvEventDecodeError naming the bad
 * field, unknown trailing fields and map keys are ignored.
 */

import { Decoder, Encoder } from '@msgpack/msgpack';
import type { BlockHash } from '../types.js';
import {
  ALL_BLOCKS_CLEARED,
  BLOCK_REMOVED,
  BLOCK_STORED,
  type BlockRemoved,
  type BlockStored,
  type KvEvent,
  type KvEventBatch,
  type KvEventEncoding,
} from './types.js';

export class KvEventDecodeError extends Error {
  override readonly name = 'KvEventDecodeError';
}

// 64-bit msgpack ints decode as bigint: block hashes use the whole range, past Number's 2^53.
const decoder = new Decoder({ useBigInt64: true });
const encoder = new Encoder({ useBigInt64: true });

const UINT64_BITS = 64;
const HASH_BYTES = 8;
const SMALL_INT_LIMIT = 0xffffffffn;

export function decodeKvEventBatch(payload: Uint8Array): KvEventBatch {
  let raw: unknown;
  try {
    raw = decoder.decode(payload);
  } catch (err) {
    throw new KvEventDecodeError(`payload is not one msgpack value: ${(err as Error).message}`);
  }
  if (Array.isArray(raw)) {
    return batch(raw[0], raw[1], raw[2]);
  }
  if (isMap(raw)) return batch(raw.ts, raw.events, raw.data_parallel_rank);
  throw new KvEventDecodeError(`batch must be an array or a map, got ${describe(raw)}`);
}

export function encodeKvEventBatch(batch: KvEventBatch, opts: { encoding: KvEventEncoding }): Uint8Array {
  const dpRank = batch.data_parallel_rank;
  if (opts.encoding === 'array') {
    const events = batch.events.map(eventAsArray);
    return encoder.encode(dpRank === undefined ? [batch.ts, events] : [batch.ts, events, dpRank]);
  }
  const events = batch.events.map(eventAsMap);
  return encoder.encode(dpRank === undefined ? { ts: batch.ts, events } : { ts: batch.ts, events, data_parallel_rank: dpRank });
}

/**
 * A block hash as the index keys it: ints keep their low 64 bits (two's complement for negative ones), bytes
 * their last 8 read big-endian (shorter ones zero-padded on the left).
 */
export function normaliseBlockHash(value: unknown, path = 'block hash'): BlockHash {
  if (typeof value === 'bigint') return BigInt.asUintN(UINT64_BITS, value);
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt.asUintN(UINT64_BITS, BigInt(value));
  if (value instanceof Uint8Array && value.length > 0) {
    let hash = 0n;
    for (let i = Math.max(0, value.length - HASH_BYTES); i < value.length; i++) hash = (hash << 8n) | BigInt(value[i]!);
    return hash;
  }
  throw new KvEventDecodeError(`${path}: expected an integer or non-empty bytes, got ${describe(value)}`);
}

function batch(ts: unknown, events: unknown, dpRank: unknown): KvEventBatch {
  if (typeof ts !== 'number' || !Number.isFinite(ts)) throw new KvEventDecodeError(`ts: expected a number, got ${describe(ts)}`);
  const list = array(events, 'events');
  const decoded = list.map((event, i) => decodeEvent(event, `events[${i}]`));
  if (dpRank === undefined || dpRank === null) return { ts, events: decoded };
  return { ts, events: decoded, data_parallel_rank: integer(dpRank, 'data_parallel_rank') };
}

function decodeEvent(raw: unknown, path: string): KvEvent {
  if (Array.isArray(raw)) {
    const tag = raw[0];
    switch (tag) {
      case BLOCK_STORED:
        return blockStored(path, raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]);
      case BLOCK_REMOVED:
        return blockRemoved(path, raw[1], raw[2]);
      case ALL_BLOCKS_CLEARED:
        return { type: ALL_BLOCKS_CLEARED };
      default:
        throw new KvEventDecodeError(`${path}: unknown event tag ${describe(tag)}`);
    }
  }
  if (isMap(raw)) {
    switch (raw.type) {
      case BLOCK_STORED:
        return blockStored(path, raw.block_hashes, raw.parent_block_hash, raw.token_ids, raw.block_size, raw.lora_id, raw.medium, raw.lora_name);
      case BLOCK_REMOVED:
        return blockRemoved(path, raw.block_hashes, raw.medium);
      case ALL_BLOCKS_CLEARED:
        return { type: ALL_BLOCKS_CLEARED };
      default:
        throw new KvEventDecodeError(`${path}.type: unknown event tag ${describe(raw.type)}`);
    }
  }
  throw new KvEventDecodeError(`${path}: expected an array or a map, got ${describe(raw)}`);
}

function blockStored(
  path: string,
  hashes: unknown,
  parent: unknown,
  tokenIds: unknown,
  blockSize: unknown,
  loraId: unknown,
  medium: unknown,
  loraName: unknown,
): BlockStored {
  return {
    type: BLOCK_STORED,
    block_hashes: blockHashes(hashes, `${path}.block_hashes`),
    parent_block_hash: parent === null || parent === undefined ? null : normaliseBlockHash(parent, `${path}.parent_block_hash`),
    token_ids: array(tokenIds, `${path}.token_ids`).map((id, i) => integer(id, `${path}.token_ids[${i}]`)),
    block_size: integer(blockSize, `${path}.block_size`),
    lora_id: loraId === null || loraId === undefined ? null : integer(loraId, `${path}.lora_id`),
    medium: optionalString(medium, `${path}.medium`),
    lora_name: optionalString(loraName, `${path}.lora_name`),
  };
}

function blockRemoved(path: string, hashes: unknown, medium: unknown): BlockRemoved {
  return { type: BLOCK_REMOVED, block_hashes: blockHashes(hashes, `${path}.block_hashes`), medium: optionalString(medium, `${path}.medium`) };
}

function blockHashes(value: unknown, path: string): BlockHash[] {
  return array(value, path).map((hash, i) => normaliseBlockHash(hash, `${path}[${i}]`));
}

function eventAsArray(event: KvEvent): unknown[] {
  switch (event.type) {
    case BLOCK_STORED:
      return [
        BLOCK_STORED,
        event.block_hashes.map(wireHash),
        event.parent_block_hash === null ? null : wireHash(event.parent_block_hash),
        event.token_ids,
        event.block_size,
        event.lora_id,
        event.medium,
        event.lora_name,
      ];
    case BLOCK_REMOVED:
      return [BLOCK_REMOVED, event.block_hashes.map(wireHash), event.medium];
    case ALL_BLOCKS_CLEARED:
      return [ALL_BLOCKS_CLEARED];
  }
}

function eventAsMap(event: KvEvent): Record<string, unknown> {
  switch (event.type) {
    case BLOCK_STORED:
      return {
        type: BLOCK_STORED,
        block_hashes: event.block_hashes.map(wireHash),
        parent_block_hash: event.parent_block_hash === null ? null : wireHash(event.parent_block_hash),
        token_ids: event.token_ids,
        block_size: event.block_size,
        lora_id: event.lora_id,
        medium: event.medium,
        lora_name: event.lora_name,
      };
    case BLOCK_REMOVED:
      return { type: BLOCK_REMOVED, block_hashes: event.block_hashes.map(wireHash), medium: event.medium };
    case ALL_BLOCKS_CLEARED:
      return { type: ALL_BLOCKS_CLEARED };
  }
}

// msgspec writes every int in its shortest form; the encoder writes a bigint as 8 bytes, so small ones go as numbers.
function wireHash(hash: BlockHash): bigint | number {
  return hash <= SMALL_INT_LIMIT ? Number(hash) : hash;
}

function array(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw new KvEventDecodeError(`${path}: expected an array, got ${describe(value)}`);
  return value;
}

function integer(value: unknown, path: string): number {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'bigint' && value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  throw new KvEventDecodeError(`${path}: expected an integer, got ${describe(value)}`);
}

function optionalString(value: unknown, path: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  throw new KvEventDecodeError(`${path}: expected a string or nil, got ${describe(value)}`);
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'nil';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return 'a map';
  return `${typeof value} ${String(value)}`;
}
