import { randomUUID } from 'node:crypto';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import type { EngineSpec } from '../../core/engine.js';
import { startSim, type RunningSim } from '../../engine-sim/server.js';
import type { Gateway } from '../../router/server.js';
import { authHeaders, startGateway, testModel } from '../helpers/cluster.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface Fleet {
  readonly sims: RunningSim[];
  readonly engines: EngineSpec[];
}

/** Simulated engines that publish KV events, as the gateway's precise mode expects. */
async function fleet(n: number, kvEvents: boolean): Promise<Fleet> {
  const sims: RunningSim[] = [];
  for (let i = 0; i < n; i++) {
    const sim = await startSim({ model: testModel, port: 0, timeScale: 20, seed: i, kvEventsEndpoint: kvEvents ? 'tcp://127.0.0.1:*' : undefined });
    cleanups.push(() => sim.close());
    sims.push(sim);
  }
  const engines = sims.map((s, i) => ({
    id: `e${i}`,
    url: s.url,
    kind: 'vllm' as const,
    models: [testModel],
    labels: {},
    kvCapacityTokens: s.kvCapacityTokens,
    kvEventsEndpoint: s.kvEventsEndpoint,
  }));
  return { sims, engines };
}

async function gateway(engines: EngineSpec[], config: Record<string, unknown> = {}): Promise<{ gw: Gateway; url: string }> {
  const gw = await startGateway(engines, config);
  const url = await gw.listen();
  cleanups.push(() => gw.close());
  return { gw, url };
}

interface Answer {
  readonly pod: string;
  readonly prefixBlocks: string;
  readonly cached: number;
  readonly content: string;
}

async function chat(url: string, messages: { role: string; content: string }[], headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: authHeaders(headers),
    body: JSON.stringify({ model: testModel, messages, max_tokens: 12 }),
  });
  const body = (await res.body.json()) as { choices: { message: { content: string } }[]; usage: { prompt_tokens_details: { cached_tokens: number } } };
  expect(res.statusCode).toBe(200);
  return {
    pod: String(res.headers['x-switchyard-pod']),
    prefixBlocks: String(res.headers['x-switchyard-prefix-blocks']),
    cached: body.usage.prompt_tokens_details.cached_tokens,
    content: body.choices[0]!.message.content,
  };
}

const words = (n: number, seed: string) => Array.from({ length: n }, (_, i) => `${seed}${i % 97} word${(i * 7) % 13}`).join(' ');

describe('prefix-aware routing, live over HTTP', () => {
  it('keeps the turns of one conversation on one engine, and the cached prefix grows', async () => {
    const { engines } = await fleet(4, false);
    const { url } = await gateway(engines, { kvcache: { hashing: 'approximate', blockSize: 16 } });
    const messages = [
      { role: 'system', content: `You are agent ${randomUUID()}. ${words(200, 'sys')}` },
      { role: 'user', content: words(60, 'q1') },
    ];
    const answers: Answer[] = [];
    for (let turn = 0; turn < 5; turn++) {
      const answer = await chat(url, messages);
      answers.push(answer);
      messages.push({ role: 'assistant', content: answer.content }, { role: 'user', content: words(40, `q${turn + 2}`) });
    }
    expect(new Set(answers.map((a) => a.pod)).size).toBe(1);
    expect(answers[0]!.cached).toBe(0);
    for (let i = 1; i < answers.length; i++) expect(answers[i]!.cached).toBeGreaterThan(answers[i - 1]!.cached);
    const [matched, total] = answers[4]!.prefixBlocks.split('/').map(Number);
    expect(matched).toBeGreaterThan(0);
    expect(matched).toBeLessThanOrEqual(total!);
  });

  it('spreads 200 users who share one system prompt over every engine', async () => {
    const { engines } = await fleet(4, false);
    const { url } = await gateway(engines, { kvcache: { hashing: 'approximate', blockSize: 16 } });
    const system = `You are a helpful assistant for ACME. ${words(300, 'policy')}`;
    const pods = new Map<string, number>();
    const users = Array.from({ length: 200 }, (_, i) => i);
    // 100 at a time: the engines are busy, which is when a hot spot would hurt.
    for (let start = 0; start < users.length; start += 100) {
      const batch = await Promise.all(
        users.slice(start, start + 100).map((u) => chat(url, [{ role: 'system', content: system }, { role: 'user', content: `user ${u}: ${words(20, `u${u}x`)}` }])),
      );
      for (const a of batch) pods.set(a.pod, (pods.get(a.pod) ?? 0) + 1);
    }
    expect(pods.size).toBe(4);
    for (const count of pods.values()) expect(count).toBeGreaterThanOrEqual(20);
  });

  it('stops preferring an engine once its KV events say it evicted the prefix', async () => {
    const { sims, engines } = await fleet(2, true);
    const { url } = await gateway(engines, { kvcache: { hashing: 'vllm' } });
    const messages = [{ role: 'user', content: `${randomUUID()} ${words(150, 'evict')}` }];
    const first = await chat(url, messages);
    const again = await chat(url, messages);
    expect(again.pod).toBe(first.pod);
    expect(again.prefixBlocks).not.toMatch(/^0\//);
    const owner = sims[engines.findIndex((e) => e.id === first.pod)]!;
    const reset = await request(`${owner.url}/reset_prefix_cache`, { method: 'POST' });
    expect(reset.statusCode).toBe(200);
    await reset.body.dump();
    const started = Date.now();
    const cleared = async () => /switchyard_kv_events_total\{[^}]*type="AllBlocksCleared"[^}]*\} [1-9]/.test(await (await request(`${url}/metrics`)).body.text());
    while (!(await cleared()) && Date.now() - started < 2_000) await new Promise((r) => setTimeout(r, 10));
    // The index must forget the engine's blocks within 200 ms of the eviction.
    expect(Date.now() - started).toBeLessThan(200);
    const after = await chat(url, messages);
    // Whichever engine it picked, the gateway no longer believes the evicted one holds the prompt.
    if (after.pod === first.pod) expect(after.prefixBlocks).toMatch(/^0\//);
  });
});

describe.runIf(process.env.REDIS_URL)('two gateway replicas sharing Redis', () => {
  it('make the same choice for the same prefix', async () => {
    const { engines } = await fleet(4, false);
    const shared = { redis: { url: process.env.REDIS_URL }, kvcache: { hashing: 'approximate', blockSize: 16, redisKeyPrefix: `test:${randomUUID()}:` } };
    const a = await gateway(engines, shared);
    const b = await gateway(engines, shared);
    for (let i = 0; i < 5; i++) {
      const messages = [{ role: 'system', content: `${randomUUID()} ${words(120, `doc${i}`)}` }, { role: 'user', content: 'summarise' }];
      const first = await chat(a.url, messages);
      // Writes are batched: give replica A's flush a moment to reach Redis.
      await new Promise((r) => setTimeout(r, 50));
      const second = await chat(b.url, [...messages.slice(0, 1), { role: 'user', content: 'and now in French' }]);
      expect(second.pod).toBe(first.pod);
      expect(second.prefixBlocks).not.toMatch(/^0\//);
    }
  });
});
