import { afterEach, describe, expect, it, vi } from 'vitest';
import { Publisher } from 'zeromq';
import { type KvRelay, startKvRelay } from '../../../engine-sidecar/kv-relay.js';
import { encodeKvEventBatch } from '../../../kvcache/events/codec.js';
import { type KvEventSubscription, subscribeKvEvents } from '../../../kvcache/events/subscriber.js';
import { BLOCK_STORED, type KvEventBatch } from '../../../kvcache/events/types.js';
import { kvEventFrames } from '../../../kvcache/events/zmq-frames.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';

// An "engine" PUB socket writing vLLM's frames, the relay, and a router's subscriber (kvcache/events) on the
// relay's endpoint feeding an in-process prefix index.

const stored = (hashes: bigint[]): KvEventBatch => ({
  ts: Date.now() / 1000,
  events: [{ type: BLOCK_STORED, block_hashes: hashes, parent_block_hash: null, token_ids: [], block_size: 16, lora_id: null, medium: 'GPU', lora_name: null }],
});

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function setup(): Promise<{ send(frames: (Buffer | Uint8Array)[]): Promise<void>; relay: KvRelay; index: LocalPrefixIndex; sub: KvEventSubscription }> {
  const engine = new Publisher({ linger: 0 });
  await engine.bind('tcp://127.0.0.1:*');
  closers.push(() => engine.close());
  // The malformed message is reported; the test counts it in the stats instead.
  const relay = await startKvRelay({ upstream: engine.lastEndpoint!, publish: 'tcp://127.0.0.1:*', onError: () => {} });
  closers.push(() => relay.close());
  const index = new LocalPrefixIndex({ maxEntries: 10_000 });
  const sub = subscribeKvEvents({ endpoint: relay.endpoint, engineId: 'e1', index });
  closers.push(() => sub.close());
  let sending = Promise.resolve();
  const send = (frames: (Buffer | Uint8Array)[]) => (sending = sending.then(() => engine.send(frames)));
  return { send, relay, index, sub };
}

describe('KV event relay', () => {
  it("forwards the engine's messages unchanged, sequence numbers included", async () => {
    const { send, relay, index, sub } = await setup();
    // ZMQ drops what is published before both hops are connected: publish until the router's index has it.
    let seq = 0n;
    await vi.waitFor(
      async () => {
        await send(kvEventFrames('', seq++, encodeKvEventBatch(stored([11n, 12n]), { encoding: 'array' })));
        expect((await index.match([11n, 12n])).get('e1')).toBe(2);
      },
      { timeout: 5_000, interval: 50 },
    );
    // Two more, one in map encoding: the subscriber sees the engine's own numbering, no gap.
    await send(kvEventFrames('', seq++, encodeKvEventBatch(stored([13n]), { encoding: 'map' })));
    await send(kvEventFrames('', seq++, encodeKvEventBatch(stored([14n]), { encoding: 'array' })));
    await vi.waitFor(() => expect(sub.stats.lastSeq).toBe(seq - 1n), { timeout: 2_000, interval: 10 });
    expect(sub.stats.gaps).toBe(0);
    expect((await index.match([11n, 12n, 13n, 14n])).get('e1')).toBe(4);
    expect(relay.stats.forwarded).toBeGreaterThanOrEqual(3);
  });

  it('drops malformed messages and, on engineRestarted, tells subscribers the cache is gone', async () => {
    const { send, relay, index, sub } = await setup();
    let seq = 0n;
    await vi.waitFor(
      async () => {
        await send(kvEventFrames('kv', seq++, encodeKvEventBatch(stored([21n]), { encoding: 'array' })));
        expect((await index.match([21n])).get('e1')).toBe(1);
      },
      { timeout: 5_000, interval: 50 },
    );
    await send([Buffer.from('kv'), Buffer.from('not a sequence number')]);
    await vi.waitFor(() => expect(relay.stats.dropped).toBe(1), { timeout: 2_000, interval: 10 });

    relay.engineRestarted();
    await vi.waitFor(async () => expect((await index.match([21n])).size).toBe(0), { timeout: 2_000, interval: 10 });
    // Numbered next after the engine's last batch: no gap, no restart seen by the subscriber.
    expect(sub.stats).toMatchObject({ gaps: 0, restarts: 0, lastSeq: seq });
    expect(relay.stats.clears).toBe(1);
  });
});
