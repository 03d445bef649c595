/**
 * Publishes KVEventBatches the way vLLM's ZmqEventPublisher does: a bound PUB socket, one three-frame message per
 * batch (topic, sequence number, msgpack payload; see zmq-frames.ts), sequence numbers from 0. The simulated
 * engine uses it; so can anything that relays events in vLLM's format.
 *
 * Not reproduced: vLLM's replay buffer and ROUTER socket for subscribers that missed batches.
 */

import { Publisher } from 'zeromq';
import { encodeKvEventBatch } from './codec.js';
import type { KvEventBatch, KvEventEncoding } from './types.js';
import { kvEventFrames } from './zmq-frames.js';

export interface KvEventPublisherOptions {
  /** Endpoint to bind, e.g. tcp://127.0.0.1:5557; port * or 0 binds any free port (see `endpoint` on the result). */
  readonly endpoint: string;
  /** Default '' (vLLM's default). */
  readonly topic?: string;
  /** Default 'array' (msgspec array_like: vLLM's layout since KV events appeared, and the one llm-d decodes). */
  readonly encoding?: KvEventEncoding;
  /** A send that failed; publishing goes on. Default: one line on stderr. */
  readonly onError?: (err: Error) => void;
}

export interface KvEventPublisher {
  /** The endpoint actually bound, with the port resolved. */
  readonly endpoint: string;
  /** Queues the batch; messages leave in publish order. */
  publish(batch: KvEventBatch): void;
  /** Sends what is queued, then closes the socket. */
  close(): Promise<void>;
}

// vLLM's default high-water mark: a subscriber that falls this far behind loses batches (and sees the gap).
const SEND_HIGH_WATER_MARK = 100_000;

export async function createKvEventPublisher(opts: KvEventPublisherOptions): Promise<KvEventPublisher> {
  const topic = opts.topic ?? '';
  const encoding = opts.encoding ?? 'array';
  const report = opts.onError ?? ((err: Error) => console.warn(`kv event publisher: ${err.message}`));
  const socket = new Publisher({ linger: 0, sendHighWaterMark: SEND_HIGH_WATER_MARK });
  await socket.bind(opts.endpoint);
  const endpoint = socket.lastEndpoint ?? opts.endpoint;
  let seq = 0n;
  // One send at a time: zeromq.js refuses a send while another is pending.
  let sending: Promise<void> = Promise.resolve();

  return {
    endpoint,
    publish(batch) {
      const frames = kvEventFrames(topic, seq++, encodeKvEventBatch(batch, { encoding }));
      sending = sending.then(() => socket.send(frames)).catch((err: Error) => report(err));
    },
    async close() {
      await sending;
      socket.close();
    },
  };
}
