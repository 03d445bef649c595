import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Publisher } from 'zeromq';
import { encodeKvEventBatch, KvEventDecodeError } from '../../../kvcache/events/codec.js';
import { createKvEventMetrics } from '../../../kvcache/events/metrics.js';
import { KvEventSequenceError, type KvEventSubscription, subscribeKvEvents } from '../../../kvcache/events/subscriber.js';
import type { KvEvent, KvEventEncoding } from '../../../kvcache/events/types.js';
import { kvEventFrames } from '../../../kvcache/events/zmq-frames.js';
import type { BlockHash, PrefixIndex, PrefixMatches } from '../../../kvcache/types.js';

type Call = ['stored' | 'removed', string, BlockHash[]] | ['cleared', string];

/** An index that only records what it is told. */
class RecordingIndex implements PrefixIndex {
  readonly calls: Call[] = [];
  async match(): Promise<PrefixMatches> {
    return new Map();
  }
  recordStored(engineId: string, hashes: readonly BlockHash[]): void {
    this.calls.push(['stored', engineId, [...hashes]]);
  }
  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void {
    this.calls.push(['removed', engineId, [...hashes]]);
  }
  clearEngine(engineId: string): void {
    this.calls.push(['cleared', engineId]);
  }
  setCapacity(): void {}
  fill(): number {
    return 0;
  }
  async close(): Promise<void> {}
}

const stored = (...hashes: bigint[]): KvEvent => ({
  type: 'BlockStored',
  block_hashes: hashes,
  parent_block_hash: null,
  token_ids: hashes.flatMap(() => [1, 2]),
  block_size: 2,
  lora_id: null,
  medium: 'GPU',
  lora_name: null,
});
const removed = (...hashes: bigint[]): KvEvent => ({ type: 'BlockRemoved', block_hashes: hashes, medium: 'GPU' });

interface Harness {
  readonly pub: Publisher;
  readonly index: RecordingIndex;
  readonly sub: KvEventSubscription;
  readonly errors: Error[];
  readonly registry: Registry;
  /** Sends one batch with the next sequence number (or `seq`). */
  send(events: KvEvent[], opts?: { seq?: bigint; encoding?: KvEventEncoding; topic?: string }): Promise<void>;
  sendFrames(frames: (string | Buffer)[]): Promise<void>;
}

const open: Harness[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) {
    await h.sub.close();
    h.pub.close();
  }
});

async function harness(topic?: string): Promise<Harness> {
  const pub = new Publisher({ linger: 0 });
  await pub.bind('tcp://127.0.0.1:*');
  const index = new RecordingIndex();
  const errors: Error[] = [];
  const registry = new Registry();
  const sub = subscribeKvEvents({
    endpoint: pub.lastEndpoint!,
    topic,
    engineId: 'e1',
    index,
    onError: (err) => errors.push(err),
    metrics: createKvEventMetrics(registry),
  });
  let next = 0n;
  const h: Harness = {
    pub,
    index,
    sub,
    errors,
    registry,
    async send(events, opts = {}) {
      const seq = opts.seq ?? next;
      next = seq + 1n;
      await pub.send(kvEventFrames(opts.topic ?? topic ?? '', seq, encodeKvEventBatch({ ts: Date.now() / 1000, events }, { encoding: opts.encoding ?? 'array' })));
    },
    async sendFrames(frames) {
      await pub.send(frames);
    },
  };
  open.push(h);
  // A SUB socket misses what is published before its subscription reaches the PUB: probe until one arrives.
  await vi.waitFor(
    async () => {
      await h.send([]);
      expect(sub.stats.batches).toBeGreaterThan(0);
    },
    { timeout: 5000, interval: 20 },
  );
  // Probes still in flight would land after the test's own batches.
  await vi.waitFor(() => expect(sub.stats.lastSeq).toBe(next - 1n), { timeout: 2000, interval: 5 });
  return h;
}

async function counter(registry: Registry, name: string): Promise<number> {
  const metric = await registry.getSingleMetric(name)!.get();
  return metric.values.reduce((sum, v) => sum + v.value, 0);
}

describe('subscribeKvEvents', () => {
  it('applies each event to the index, in order, from either layout', async () => {
    const h = await harness();
    await h.send([stored(1n, 2n), removed(1n)], { encoding: 'array' });
    await h.send([{ type: 'AllBlocksCleared' }, stored(2n ** 64n - 1n)], { encoding: 'map' });
    await vi.waitFor(() => expect(h.index.calls).toHaveLength(4), { timeout: 2000, interval: 5 });
    expect(h.index.calls).toEqual([
      ['stored', 'e1', [1n, 2n]],
      ['removed', 'e1', [1n]],
      ['cleared', 'e1'],
      ['stored', 'e1', [2n ** 64n - 1n]],
    ]);
    expect(h.sub.stats).toMatchObject({ events: 4, decodeErrors: 0, gaps: 0 });
    expect(await counter(h.registry, 'switchyard_kv_events_total')).toBe(4);
    expect(h.errors).toEqual([]);
  });

  it('only hears its topic', async () => {
    const h = await harness('kv@pod-a');
    await h.send([stored(5n)], { topic: 'kv@pod-b' });
    await h.send([stored(6n)]);
    await vi.waitFor(() => expect(h.index.calls).toEqual([['stored', 'e1', [6n]]]), { timeout: 2000, interval: 5 });
  });

  it('counts, reports and drops what does not decode, and keeps going', async () => {
    const h = await harness();
    const seq = Buffer.alloc(8);
    await h.sendFrames(['', Buffer.from('only two frames')]);
    await h.sendFrames(['', Buffer.from([1, 2, 3]), Buffer.from([0x90])]);
    await h.sendFrames(['', seq, Buffer.from([0xc1])]);
    await h.sendFrames(['', seq, Buffer.from(encodeKvEventBatch({ ts: 1.5, events: [] }, { encoding: 'array' })).subarray(0, 3)]);
    await h.send([stored(7n)]);
    await vi.waitFor(() => expect(h.index.calls).toEqual([['stored', 'e1', [7n]]]), { timeout: 2000, interval: 5 });
    expect(h.sub.stats.decodeErrors).toBe(4);
    expect(h.errors).toHaveLength(4);
    for (const err of h.errors) expect(err).toBeInstanceOf(KvEventDecodeError);
    expect(await counter(h.registry, 'switchyard_kv_event_decode_errors_total')).toBe(4);
  });

  it('counts sequence gaps, and clears the engine when the publisher restarts', async () => {
    const h = await harness();
    const first = h.sub.stats.lastSeq!;
    await h.send([stored(1n)], { seq: first + 1n });
    await h.send([stored(2n)], { seq: first + 4n }); // 2 batches lost
    await h.send([stored(3n)], { seq: first + 5n });
    await h.send([stored(4n)], { seq: first + 9n }); // 3 more
    await h.send([stored(5n)], { seq: 0n }); // a new publisher
    await vi.waitFor(() => expect(h.sub.stats.events).toBe(5), { timeout: 2000, interval: 5 });
    expect(h.sub.stats).toMatchObject({ gaps: 2, missedBatches: 5, restarts: 1, lastSeq: 0n });
    expect(h.index.calls.at(-2)).toEqual(['cleared', 'e1']);
    expect(h.index.calls.at(-1)).toEqual(['stored', 'e1', [5n]]);
    expect(h.errors.map((e) => e.constructor)).toEqual([KvEventSequenceError, KvEventSequenceError, KvEventSequenceError]);
    expect(await counter(h.registry, 'switchyard_kv_event_missed_batches_total')).toBe(5);
    expect(await counter(h.registry, 'switchyard_kv_event_sequence_gaps_total')).toBe(2);
  });

  it('reports an index failure without stopping', async () => {
    const h = await harness();
    const failing = vi.spyOn(h.index, 'recordStored').mockImplementationOnce(() => {
      throw new Error('index down');
    });
    await h.send([stored(1n)]);
    await h.send([stored(2n)]);
    await vi.waitFor(() => expect(failing).toHaveBeenCalledTimes(2), { timeout: 2000, interval: 5 });
    expect(h.errors.map((e) => e.message)).toEqual(['index down']);
  });

  it('stops receiving once closed', async () => {
    const h = await harness();
    await h.sub.close();
    await h.sub.close();
    await h.send([stored(1n)]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(h.index.calls).toEqual([]);
  });
});
