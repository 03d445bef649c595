/**
 * Feeds one engine's KV events into the prefix index: a ZMQ SUB socket connected to the engine's PUB endpoint
 * (vLLM: --kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557"}'),
 * each batch decoded and applied in order:
 *
 *   BlockStored       index.recordStored(engineId, block_hashes)
 *   BlockRemoved      index.recordRemoved(engineId, block_hashes)
 *   AllBlocksCleared  index.clearEngine(engineId)
 *
 * Nothing that arrives can stop the loop: a message that does not decode is counted, reported and dropped.
 *
 * Sequence numbers: each batch carries the publisher's counter. A jump ahead means batches were lost (PUB drops
 * at its high-water mark, and everything sent while the subscriber was disconnected): it is counted and reported,
 * and the index keeps what it has, since the engine's capacity bound and the router's own decisions correct stale
 * entries over time. vLLM can replay missed batches from a ROUTER socket; that is not used here. A number going
 * backwards means the publisher restarted, i.e. a new engine process with an empty cache, so the engine's
 * entries are cleared. The first batch after connecting sets the baseline (ZMQ drops what was sent before the
 * connection was up, so it need not be 0).
 *
 * Medium is not tracked: blocks reported on any tier (GPU, CPU offload) count as held by the engine.
 */

import { Subscriber } from 'zeromq';
import type { PrefixIndex } from '../types.js';
import { decodeKvEventBatch } from './codec.js';
import type { KvEventMetrics } from './metrics.js';
import { ALL_BLOCKS_CLEARED, BLOCK_REMOVED, BLOCK_STORED, type KvEventBatch } from './types.js';
import { parseKvEventFrames } from './zmq-frames.js';

export interface KvEventSubscriptionOptions {
  /** The engine's PUB endpoint, e.g. tcp://10.0.0.7:5557. Connecting never fails: ZMQ retries until it is up. */
  readonly endpoint: string;
  /** Topic prefix to subscribe to; default '' (all), which is what vLLM publishes on unless configured. */
  readonly topic?: string;
  /** The engine the events are about, as the index names it. */
  readonly engineId: string;
  readonly index: PrefixIndex;
  /** Dropped messages, sequence gaps and index failures. Default: one line on stderr each. */
  readonly onError?: (err: Error) => void;
  readonly metrics?: KvEventMetrics;
}

export interface KvEventStats {
  /** Batches applied to the index. */
  batches: number;
  events: number;
  decodeErrors: number;
  /** Times the sequence number jumped ahead. */
  gaps: number;
  /** Batches lost in those jumps. */
  missedBatches: number;
  /** Times the sequence number went backwards (publisher restarted). */
  restarts: number;
  /** The last sequence number seen, undefined before the first batch. */
  lastSeq: bigint | undefined;
}

export interface KvEventSubscription {
  readonly stats: Readonly<KvEventStats>;
  /** Stops receiving; resolves once the loop has ended. */
  close(): Promise<void>;
}

export class KvEventSequenceError extends Error {
  override readonly name = 'KvEventSequenceError';
}

export function subscribeKvEvents(opts: KvEventSubscriptionOptions): KvEventSubscription {
  const { engineId, index, metrics } = opts;
  const report = opts.onError ?? ((err: Error) => console.warn(`kv events from ${engineId}: ${err.message}`));
  const stats: KvEventStats = { batches: 0, events: 0, decodeErrors: 0, gaps: 0, missedBatches: 0, restarts: 0, lastSeq: undefined };
  const labels = { engine: engineId };
  const socket = new Subscriber({ linger: 0 });
  socket.connect(opts.endpoint);
  socket.subscribe(opts.topic ?? '');

  const receive = (frames: Buffer[]): void => {
    let seq: bigint;
    let batch: KvEventBatch;
    try {
      const message = parseKvEventFrames(frames);
      seq = message.seq;
      batch = decodeKvEventBatch(message.payload);
    } catch (err) {
      stats.decodeErrors++;
      metrics?.decodeErrors.inc(labels);
      report(err as Error);
      return;
    }
    try {
      checkSequence(seq);
      apply(batch);
    } catch (err) {
      report(err as Error);
    }
  };

  const checkSequence = (seq: bigint): void => {
    const last = stats.lastSeq;
    stats.lastSeq = seq;
    if (last === undefined || seq === last + 1n) return;
    if (seq > last) {
      const missed = seq - last - 1n;
      stats.gaps++;
      stats.missedBatches += Number(missed);
      metrics?.sequenceGaps.inc(labels);
      metrics?.missedBatches.inc(labels, Number(missed));
      report(new KvEventSequenceError(`sequence jumped from ${last} to ${seq}: ${missed} batch(es) lost`));
      return;
    }
    stats.restarts++;
    index.clearEngine(engineId);
    report(new KvEventSequenceError(`sequence went back from ${last} to ${seq}: publisher restarted, engine entries cleared`));
  };

  const apply = (batch: KvEventBatch): void => {
    for (const event of batch.events) {
      switch (event.type) {
        case BLOCK_STORED:
          index.recordStored(engineId, event.block_hashes);
          break;
        case BLOCK_REMOVED:
          index.recordRemoved(engineId, event.block_hashes);
          break;
        case ALL_BLOCKS_CLEARED:
          index.clearEngine(engineId);
          break;
      }
      stats.events++;
      metrics?.events.inc({ engine: engineId, type: event.type });
    }
    stats.batches++;
    metrics?.batches.inc(labels);
    metrics?.lag.observe(labels, Math.max(0, Date.now() / 1000 - batch.ts));
  };

  // The iterator ends when the socket is closed; any other failure of the socket itself is reported once.
  const loop = (async () => {
    try {
      for await (const frames of socket) receive(frames);
    } catch (err) {
      if (!socket.closed) report(err as Error);
    }
  })();

  return {
    stats,
    close: async () => {
      if (!socket.closed) socket.close();
      await loop;
    },
  };
}
