/**
 * Relays the engine's KV events (kvcache/events: vLLM's three-frame ZMQ messages) from the engine's PUB socket to
 * one the sidecar binds, so routers connect to sidecars only and the engine's port stays inside the pod.
 *
 * Messages are forwarded as they arrive, frames untouched, after checking they are well-formed (parseKvEventFrames;
 * a malformed one is counted and dropped). Not decoded and re-published through createKvEventPublisher, because
 * the frames are already what routers read, and forwarding them keeps what a re-encoding would lose: the
 * engine's sequence numbers (a subscriber tells lost batches and engine restarts from them: kvcache/events/
 * subscriber.ts), the engine's topic and encoding, and event fields the codec does not model.
 *
 * engineRestarted(): the supervisor saw the engine exit, so its cache is gone. The relay sends one batch of
 * AllBlocksCleared numbered next after the last one forwarded: subscribers clear the engine's entries at once,
 * rather than when the new engine first publishes. The new engine numbers from 0 again, which subscribers read as
 * the publisher restarting, clearing an already empty set.
 *
 * Upstream connection: ZMQ reconnects by itself, so the same SUB socket follows the engine across restarts.
 */

import { Publisher, Subscriber } from 'zeromq';
import { encodeKvEventBatch } from '../kvcache/events/codec.js';
import { ALL_BLOCKS_CLEARED } from '../kvcache/events/types.js';
import { kvEventFrames, parseKvEventFrames } from '../kvcache/events/zmq-frames.js';

export interface KvRelayOptions {
  /** The engine's PUB endpoint, e.g. tcp://127.0.0.1:5557. */
  readonly upstream: string;
  /** Where to bind the sidecar's PUB socket, e.g. tcp://0.0.0.0:5558; port * for any free one. */
  readonly publish: string;
  /** Dropped messages and socket failures. Default: one line on stderr each. */
  readonly onError?: (err: Error) => void;
}

export interface KvRelayStats {
  forwarded: number;
  dropped: number;
  /** AllBlocksCleared batches sent for engine restarts. */
  clears: number;
}

export interface KvRelay {
  /** The endpoint bound, with the port resolved (and the address as bound, e.g. 0.0.0.0). */
  readonly endpoint: string;
  readonly stats: Readonly<KvRelayStats>;
  /** Tells subscribers the engine's cache is gone (see the module comment). */
  engineRestarted(): void;
  /** Stops receiving, sends what is queued, closes both sockets. */
  close(): Promise<void>;
}

// As vLLM's publisher: a subscriber this far behind loses batches, and sees the gap in the sequence numbers.
const SEND_HIGH_WATER_MARK = 100_000;

export async function startKvRelay(opts: KvRelayOptions): Promise<KvRelay> {
  const report = opts.onError ?? ((err: Error) => console.warn(`kv event relay: ${err.message}`));
  const pub = new Publisher({ linger: 0, sendHighWaterMark: SEND_HIGH_WATER_MARK });
  await pub.bind(opts.publish);
  const endpoint = pub.lastEndpoint ?? opts.publish;
  const sub = new Subscriber({ linger: 0 });
  sub.connect(opts.upstream);
  sub.subscribe('');
  const stats: KvRelayStats = { forwarded: 0, dropped: 0, clears: 0 };
  // The engine's topic, as last seen, for the batches the relay writes itself.
  let topic = '';
  let lastSeq: bigint | undefined;
  // One send at a time: zeromq.js refuses a send while another is pending.
  let sending: Promise<void> = Promise.resolve();
  const send = (frames: (Buffer | Uint8Array)[]): void => {
    sending = sending.then(() => pub.send(frames)).catch((err: Error) => report(err));
  };

  const loop = (async () => {
    try {
      for await (const frames of sub) {
        try {
          const message = parseKvEventFrames(frames);
          topic = message.topic;
          lastSeq = message.seq;
        } catch (err) {
          stats.dropped++;
          report(err as Error);
          continue;
        }
        stats.forwarded++;
        send(frames);
      }
    } catch (err) {
      if (!sub.closed) report(err as Error);
    }
  })();

  return {
    endpoint,
    stats,
    engineRestarted() {
      if (pub.closed) return;
      stats.clears++;
      const payload = encodeKvEventBatch({ ts: Date.now() / 1000, events: [{ type: ALL_BLOCKS_CLEARED }] }, { encoding: 'array' });
      lastSeq = lastSeq === undefined ? 0n : lastSeq + 1n;
      send(kvEventFrames(topic, lastSeq, payload));
    },
    async close() {
      if (!sub.closed) sub.close();
      await loop;
      await sending;
      if (!pub.closed) pub.close();
    },
  };
}
