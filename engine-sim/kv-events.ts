/**
 * The simulated engine's KV events, published as vLLM publishes them: each engine step's cache changes as one
 * KVEventBatch on a ZMQ PUB socket (kvcache/events).
 *
 * The prefix cache names blocks with its own fast 53-bit hashes; the events name them with vLLM's hashes of the
 * same tokens (kvcache/precise-hash: SHA-256 over CBOR, the adapter's name as the LoRA extra key, PYTHONHASHSEED
 * '0'), so a router hashing the prompt with vllmBlockHashes finds what this engine holds. The translation from one
 * name to the other is kept for every cached block, which is what BlockRemoved needs after the request that
 * stored the block is gone; it is bounded by the cache's size.
 */

import { createKvEventPublisher } from '../kvcache/events/publisher.js';
import { ALL_BLOCKS_CLEARED, BLOCK_REMOVED, BLOCK_STORED, type KvEvent, type KvEventEncoding, MEDIUM_GPU } from '../kvcache/events/types.js';
import { vllmBlockHashes } from '../kvcache/precise-hash.js';
import type { BlockHash as VllmBlockHash } from '../kvcache/types.js';
import type { BlockHash } from './prefix-cache.js';
import type { CacheEvent, ModelRequest } from './timing-model.js';

export interface SimKvEventsOptions {
  /** ZMQ endpoint to bind the PUB socket on, e.g. tcp://127.0.0.1:5557 (port * or 0: any free one). */
  readonly endpoint: string;
  readonly topic?: string;
  readonly encoding?: KvEventEncoding;
  /** The engine's block size: the sim's and the events' blocks are the same blocks. */
  readonly blockSize: number;
}

export interface SimKvEvents {
  /** The endpoint bound, with the port resolved. */
  readonly endpoint: string;
  /** Gives the token ids (prompt then output) of a request the engine will run: the events carry and hash them. */
  track(request: ModelRequest, tokenIds: readonly number[]): void;
  /** Publishes one step's cache events as one batch; nothing when there are none. */
  publish(events: readonly CacheEvent[]): void;
  close(): Promise<void>;
}

interface Tracked {
  readonly tokenIds: readonly number[];
  hashes: VllmBlockHash[] | undefined;
}

export async function startSimKvEvents(opts: SimKvEventsOptions): Promise<SimKvEvents> {
  const { blockSize } = opts;
  const publisher = await createKvEventPublisher({ endpoint: opts.endpoint, topic: opts.topic, encoding: opts.encoding });
  // Requests drop out of the map with the request objects, once the engine is done with them.
  const tracked = new WeakMap<ModelRequest, Tracked>();
  const cached = new Map<BlockHash, VllmBlockHash>();

  const stored = (event: Extract<CacheEvent, { type: 'stored' }>): KvEvent => {
    const { request, fromBlock, toBlock } = event;
    const entry = tracked.get(request);
    if (entry === undefined) throw new Error(`kv events: request ${request.id} was not tracked before it ran`);
    // Hashed once per request, on its first stored blocks: the chain needs every block before them anyway.
    const hashes = (entry.hashes ??= vllmBlockHashes(entry.tokenIds, { blockSize, loraName: request.adapter }));
    for (let b = fromBlock; b < toBlock; b++) cached.set(request.blockHashes[b]!, hashes[b]!);
    return {
      type: BLOCK_STORED,
      block_hashes: hashes.slice(fromBlock, toBlock),
      parent_block_hash: fromBlock === 0 ? null : hashes[fromBlock - 1]!,
      token_ids: entry.tokenIds.slice(fromBlock * blockSize, toBlock * blockSize),
      block_size: blockSize,
      // vLLM's integer adapter ids are not modelled; lora_name is what its hashes use.
      lora_id: null,
      medium: MEDIUM_GPU,
      lora_name: request.adapter ?? null,
    };
  };

  const removed = (hash: BlockHash): KvEvent => {
    const vllmHash = cached.get(hash);
    if (vllmHash === undefined) throw new Error(`kv events: evicted block ${hash} was never reported stored`);
    cached.delete(hash);
    // One event per evicted block, as vLLM's BlockPool emits them.
    return { type: BLOCK_REMOVED, block_hashes: [vllmHash], medium: MEDIUM_GPU };
  };

  return {
    endpoint: publisher.endpoint,
    track(request, tokenIds) {
      tracked.set(request, { tokenIds, hashes: undefined });
    },
    publish(events) {
      if (events.length === 0) return;
      const out = events.map((event): KvEvent => {
        switch (event.type) {
          case 'stored':
            return stored(event);
          case 'removed':
            return removed(event.hash);
          case 'cleared':
            cached.clear();
            return { type: ALL_BLOCKS_CLEARED };
        }
      });
      publisher.publish({ ts: Date.now() / 1000, events: out, data_parallel_rank: 0 });
    },
    close: () => publisher.close(),
  };
}
