import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Subscriber } from 'zeromq';
import { type RunningSim, startSim } from '../../engine-sim/server.js';
import { renderChatPrompt } from '../../kvcache/chat-template.js';
import { decodeKvEventBatch } from '../../kvcache/events/codec.js';
import { createKvEventMetrics } from '../../kvcache/events/metrics.js';
import { type KvEventSubscription, subscribeKvEvents } from '../../kvcache/events/subscriber.js';
import type { BlockStored, KvEventBatch, KvEventEncoding } from '../../kvcache/events/types.js';
import { parseKvEventFrames } from '../../kvcache/events/zmq-frames.js';
import { LocalPrefixIndex } from '../../kvcache/index/local.js';
import { vllmBlockHashes } from '../../kvcache/precise-hash.js';
import { tokenize } from '../../kvcache/tokenizers/approximate.js';
import type { BlockHash } from '../../kvcache/types.js';

// A simulated engine publishing KV events, a subscriber feeding the in-process prefix index, and the router's
// precise hashing of the same chat prompt: the index must say the engine holds the prompt, then that it no longer
// does once evicted, each within 200 ms.

const MODEL = 'kv-model';
const ENGINE = 'sim-0';
const ADAPTER = 'sql-lora';
const DEADLINE_MS = 200;

type Message = { role: string; content: string };

/** Wall-clock milliseconds with sub-millisecond resolution, comparable with a batch's ts * 1000. */
const nowMs = (): number => performance.timeOrigin + performance.now();

function text(seed: string, words: number): string {
  return Array.from({ length: words }, (_, i) => `${seed}${i % 97} lorem${(i * 31) % 89}`).join(' ');
}

async function chat(base: string, messages: Message[], model = MODEL): Promise<void> {
  const response = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages, max_tokens: 2 }),
  });
  expect(response.status).toBe(200);
  await response.json();
}

/** Polls (every event-loop turn) until `check` holds; returns when it first did. */
async function when(check: () => Promise<boolean>, timeoutMs: number): Promise<number | undefined> {
  const giveUp = nowMs() + timeoutMs;
  while (nowMs() < giveUp) {
    if (await check()) return nowMs();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return undefined;
}

/** A second subscriber that keeps every batch, to see what went over the wire and when it was published. */
function tap(endpoint: string): { batches: KvEventBatch[]; close(): void } {
  const socket = new Subscriber({ linger: 0 });
  socket.connect(endpoint);
  socket.subscribe('');
  const batches: KvEventBatch[] = [];
  void (async () => {
    for await (const frames of socket) batches.push(decodeKvEventBatch(parseKvEventFrames(frames).payload));
  })();
  return { batches, close: () => socket.close() };
}

/** What the tap saw; it may hear a batch a moment after the subscriber under test. */
async function onWire<T>(find: () => T | undefined): Promise<T> {
  return vi.waitFor(
    () => {
      const found = find();
      expect(found).toBeDefined();
      return found!;
    },
    { timeout: 1000, interval: 2 },
  );
}

const latencies: string[] = [];
afterAll(() => {
  console.log(`KV event latency (publish = end of the engine step, ts in the batch):\n  ${latencies.join('\n  ')}`);
});

describe.each<KvEventEncoding>(['array', 'map'])('KV events from the simulated engine (%s encoding)', (encoding) => {
  let sim: RunningSim;
  let index: LocalPrefixIndex;
  let subscription: KvEventSubscription;
  let wire: ReturnType<typeof tap>;
  const registry = new Registry();
  const held = async (hashes: BlockHash[]): Promise<number> => (await index.match(hashes)).get(ENGINE) ?? 0;
  const storedEvents = (): BlockStored[] => wire.batches.flatMap((b) => b.events.filter((e): e is BlockStored => e.type === 'BlockStored'));

  beforeAll(async () => {
    // 4,096 tokens of KV: 256 blocks, so a few long prompts evict the oldest.
    sim = await startSim({ model: MODEL, kvEventsEndpoint: 'tcp://127.0.0.1:*', kvEventsEncoding: encoding, kvCapacityTokens: 4096, timeScale: 10, loraLoadMs: 0 });
    expect(sim.kvEventsEndpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    index = new LocalPrefixIndex({ maxEntries: 100_000 });
    subscription = subscribeKvEvents({ endpoint: sim.kvEventsEndpoint!, engineId: ENGINE, index, metrics: createKvEventMetrics(registry) });
    wire = tap(sim.kvEventsEndpoint!);
    // Subscriptions take a moment to reach the PUB socket; until then events are dropped. Warm up with prompts of
    // their own until both subscribers hear.
    for (let i = 0; subscription.stats.batches === 0 || wire.batches.length === 0; i++) {
      expect(i).toBeLessThan(200);
      await chat(sim.url, [{ role: 'user', content: `warm-up ${i} ${text('w', 10)}` }]);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  });

  afterAll(async () => {
    wire?.close();
    await subscription?.close();
    await sim?.close();
  });

  const messages: Message[] = [
    { role: 'system', content: `You answer questions about documents. ${text('sys', 40)}` },
    { role: 'user', content: `Summarise: ${text('doc', 60)}` },
  ];
  const tokens = tokenize(renderChatPrompt(messages));
  const baseHashes = vllmBlockHashes(tokens);

  it('puts a chat prompt’s vLLM block hashes in the index within 200 ms', async () => {
    expect(baseHashes.length).toBeGreaterThanOrEqual(10);
    expect(await held(baseHashes)).toBe(0);
    const sent = nowMs();
    await chat(sim.url, messages);
    const answered = nowMs();
    const inIndex = await when(async () => (await held(baseHashes)) === baseHashes.length, 1000);
    expect(inIndex).toBeDefined();
    const event = await onWire(() => storedEvents().find((e) => e.block_hashes[0] === baseHashes[0]));
    const published = wire.batches.find((b) => b.events.includes(event))!.ts * 1000;
    latencies.push(
      `${encoding}: stored: ${(inIndex! - published).toFixed(1)} ms publish -> index, ${(inIndex! - answered).toFixed(1)} ms after the answer (request took ${(answered - sent).toFixed(1)} ms)`,
    );
    expect(inIndex! - published).toBeLessThan(DEADLINE_MS);
    expect(inIndex! - answered).toBeLessThan(DEADLINE_MS);

    // The event itself is vLLM's BlockStored for the prompt's first blocks.
    expect(event).toMatchObject({ parent_block_hash: null, block_size: 16, lora_id: null, medium: 'GPU', lora_name: null });
    expect(event.token_ids).toEqual(tokens.slice(0, event.block_hashes.length * 16));
    expect(event.block_hashes).toEqual(baseHashes.slice(0, event.block_hashes.length));
  });

  it('keys an adapter’s blocks with its name, as vLLM’s LoRA extra key', async () => {
    const load = await fetch(`${sim.url}/v1/load_lora_adapter`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ lora_name: ADAPTER, lora_path: '/adapters/sql' }),
    });
    expect(load.status).toBe(200);
    const loraHashes = vllmBlockHashes(tokens, { loraName: ADAPTER });
    expect(loraHashes[0]).not.toBe(baseHashes[0]);
    await chat(sim.url, messages, ADAPTER);
    expect(await when(async () => (await held(loraHashes)) === loraHashes.length, DEADLINE_MS)).toBeDefined();
    const event = await onWire(() => storedEvents().find((e) => e.block_hashes[0] === loraHashes[0]));
    expect(event.lora_name).toBe(ADAPTER);
  });

  it('drops evicted blocks from the index within 200 ms', async () => {
    expect(await held(baseHashes)).toBe(baseHashes.length);
    let evicted: number | undefined;
    let answered = 0;
    // Long prompts of their own until the engine needs the base prompt's blocks (its tail goes first).
    for (let i = 0; evicted === undefined; i++) {
      expect(i).toBeLessThan(10);
      await chat(sim.url, [{ role: 'user', content: `filler ${i} ${text(`f${i}x`, 250)}` }]);
      answered = nowMs();
      evicted = await when(async () => (await held(baseHashes)) < baseHashes.length, DEADLINE_MS + 50);
    }
    const tail = baseHashes.at(-1)!;
    const batch = await onWire(() => wire.batches.find((b) => b.events.some((e) => e.type === 'BlockRemoved' && e.block_hashes.includes(tail))));
    latencies.push(`${encoding}: removed: ${(evicted - batch.ts * 1000).toFixed(1)} ms publish -> index, ${(evicted - answered).toFixed(1)} ms after the evicting answer`);
    expect(evicted - batch.ts * 1000).toBeLessThan(DEADLINE_MS);
    expect(evicted - answered).toBeLessThan(DEADLINE_MS);
    expect(subscription.stats).toMatchObject({ decodeErrors: 0, gaps: 0, restarts: 0 });
    // Every applied batch was timed from its ts.
    const lag = await registry.getSingleMetricAsString('switchyard_kv_event_lag_seconds');
    expect(lag).toMatch(new RegExp(`^switchyard_kv_event_lag_seconds_count\\{engine="${ENGINE}"\\} ${subscription.stats.batches}$`, 'm'));
  });

  it('clears the engine in the index when its prefix cache is reset', async () => {
    const loraHashes = vllmBlockHashes(tokens, { loraName: ADAPTER });
    await chat(sim.url, messages, ADAPTER);
    expect(await when(async () => (await held(loraHashes)) === loraHashes.length, DEADLINE_MS)).toBeDefined();
    await vi.waitFor(
      async () => {
        const reset = await fetch(`${sim.url}/reset_prefix_cache`, { method: 'POST' });
        expect(reset.status).toBe(200);
      },
      { timeout: 2000, interval: 20 },
    );
    expect(await when(async () => (await held(loraHashes)) === 0, DEADLINE_MS)).toBeDefined();
    await onWire(() => wire.batches.find((b) => b.events.length === 1 && b.events[0]!.type === 'AllBlocksCleared'));
  });
});

describe('switchyard sim --kv-events-endpoint', () => {
  const simModule = fileURLToPath(new URL('../../dist/cli/sim.js', import.meta.url));

  function runCli(args: string[]) {
    if (!existsSync(simModule)) throw new Error(`${simModule} is missing: run \`npm run build\` first (npm test does)`);
    const child = spawn(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(simModule)}).then((m) => m.runSimCommand(process.argv.slice(1)))`, '--', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    return { child, stdout: () => out, stderr: () => err };
  }

  it('publishes on the given endpoint, topic and encoding', async () => {
    const topic = 'kv@sim-cli@cli-model';
    const cli = runCli(['--model', 'cli-model', '--port', '0', '--time-scale', '50', '--kv-events-endpoint', 'tcp://127.0.0.1:0', '--kv-events-topic', topic, '--kv-events-encoding', 'map']);
    try {
      await expect.poll(cli.stdout, { timeout: 10_000 }).toMatch(/\n$/);
      const match = /^switchyard sim listening on (http:\/\/127\.0\.0\.1:\d+) model=cli-model kv-events=(tcp:\/\/127\.0\.0\.1:\d+)\n$/.exec(cli.stdout());
      expect(match, cli.stdout()).not.toBeNull();
      const [, url, endpoint] = match!;
      const index = new LocalPrefixIndex({ maxEntries: 10_000 });
      const subscription = subscribeKvEvents({ endpoint: endpoint!, topic, engineId: 'cli', index });
      try {
        const messages = (i: number): Message[] => [{ role: 'user', content: `question ${i}: ${text(`q${i}x`, 20)}` }];
        // Warm up until the subscription hears, then check a fresh prompt lands.
        for (let i = 0; subscription.stats.batches === 0; i++) {
          expect(i).toBeLessThan(200);
          await chat(url!, messages(i), 'cli-model');
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const hashes = vllmBlockHashes(tokenize(renderChatPrompt(messages(1000))));
        await chat(url!, messages(1000), 'cli-model');
        expect(await when(async () => (await index.match(hashes)).get('cli') === hashes.length, DEADLINE_MS)).toBeDefined();
        expect(subscription.stats.decodeErrors).toBe(0);
      } finally {
        await subscription.close();
      }
    } finally {
      cli.child.kill('SIGTERM');
      if (cli.child.exitCode === null) await once(cli.child, 'exit');
    }
  });

  it('exits 2 on a bad encoding or endpoint', async () => {
    for (const args of [['--kv-events-encoding', 'json'], ['--kv-events-endpoint', '127.0.0.1:5557']]) {
      const cli = runCli(['--model', 'm', '--port', '0', ...args]);
      const [code] = await once(cli.child, 'exit');
      expect(code, args.join(' ')).toBe(2);
      expect(cli.stderr()).toContain(args[0]);
    }
  });
});
