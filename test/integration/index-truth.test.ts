import { randomUUID } from 'node:crypto';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import type { EngineSpec } from '../../core/engine.js';
import { startSim } from '../../engine-sim/server.js';
import { AUDIT_MIN_SAMPLES } from '../../router/placement/index-audit.js';
import { authHeaders, metricValue, spawnSim, startGateway, testModel } from '../helpers/cluster.js';
import { killOnExit } from '../helpers/gateway-process.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** Probes and scrapes every 50 ms, so the gateway notices a restart within a fraction of a second. */
const fast = { kvcache: { hashing: 'approximate', blockSize: 16 }, health: { intervalMs: 50, timeoutMs: 200 }, scrape: { intervalMs: 50 } };

async function gateway(engines: EngineSpec[]): Promise<string> {
  const gw = await startGateway(engines, fast);
  cleanups.push(() => gw.close());
  return gw.listen();
}

interface Answer {
  readonly prefixBlocks: string;
  readonly cached: number;
}

async function chat(url: string, content: string): Promise<Answer> {
  const res = await request(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: authHeaders(),
    body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content }], max_tokens: 4 }),
  });
  const body = (await res.body.json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
  expect(res.statusCode).toBe(200);
  return { prefixBlocks: String(res.headers['x-switchyard-prefix-blocks']), cached: body.usage.prompt_tokens_details.cached_tokens };
}

async function getJson(url: string): Promise<{ status: number; body: unknown }> {
  const res = await request(url);
  return { status: res.statusCode, body: await res.body.json() };
}

/** Polls `cond` every 20 ms; fails naming `what` after timeoutMs. */
async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const longPrompt = () => `${randomUUID()} ${Array.from({ length: 200 }, (_, i) => `word${i % 37} item${(i * 11) % 17}`).join(' ')}`;

describe('the prefix index and engine restarts', () => {
  it('forgets what an engine held once it restarted on the same port', async () => {
    const spawn = async (port: string) => {
      const sim = await spawnSim(['--zero-latency', '--port', port]);
      killOnExit(sim.child);
      cleanups.push(() => sim.kill());
      return sim;
    };
    const before = await spawn('0');
    const port = new URL(before.url).port;
    const url = await gateway([{ id: 'e0', url: before.url, kind: 'vllm', models: [testModel], labels: {} }]);
    const prompt = longPrompt();

    const first = await chat(url, prompt);
    const [, blocks] = first.prefixBlocks.split('/').map(Number);
    expect(blocks).toBeGreaterThan(5);
    expect(first.prefixBlocks).toBe(`0/${blocks}`);
    const second = await chat(url, prompt);
    expect(second.prefixBlocks).toBe(`${blocks}/${blocks}`);
    expect(second.cached).toBeGreaterThan(0);

    await before.kill('SIGKILL');
    await spawn(port);
    const restarts = async () => metricValue(await (await request(`${url}/metrics`)).body.text(), 'switchyard_engine_restarts_total', { engine: 'e0', reason: 'start_time' });
    await until('the gateway to notice the restart', async () => (await restarts()) >= 1);

    const third = await chat(url, prompt);
    expect(third).toEqual({ prefixBlocks: `0/${blocks}`, cached: 0 });
    expect(await restarts()).toBe(1);
  });
});

describe('/healthz and the index audit', () => {
  it('reports degraded, still with 200, when an engine keeps holding less than the index claims', async () => {
    const sim = await startSim({ model: testModel, port: 0, zeroLatency: true });
    cleanups.push(() => sim.close());
    const url = await gateway([{ id: 'e0', url: sim.url, kind: 'vllm', models: [testModel], labels: {} }]);
    expect(await getJson(`${url}/healthz`)).toEqual({ status: 200, body: { status: 'ok' } });

    // Each prompt is sent, the engine's cache is emptied behind the gateway's back, and the prompt is sent again:
    // the index claims every block and the engine reports none, as an engine with prefix caching off would.
    for (let i = 0; i < AUDIT_MIN_SAMPLES; i++) {
      const prompt = longPrompt();
      await chat(url, prompt);
      const reset = await request(`${sim.url}/reset_prefix_cache`, { method: 'POST' });
      expect(reset.statusCode).toBe(200);
      await reset.body.dump();
      const again = await chat(url, prompt);
      expect(again.prefixBlocks).not.toMatch(/^0\//);
      expect(again.cached).toBe(0);
    }

    expect(await getJson(`${url}/healthz`)).toEqual({
      status: 200,
      body: {
        status: 'degraded',
        checks: [{ engine: 'e0', reason: 'the engine reports no cached tokens: prefix caching off, or its usage lacks prompt_tokens_details.cached_tokens' }],
      },
    });
    const text = await (await request(`${url}/metrics`)).body.text();
    expect(metricValue(text, 'switchyard_prefix_index_agreement_total', { engine: 'e0', verdict: 'over' })).toBe(AUDIT_MIN_SAMPLES);
  });
});

describe('what the index learns from answers', () => {
  async function chatRaw(url: string, content: string, extra: Record<string, unknown> = {}) {
    const res = await request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: authHeaders(),
      body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content }], max_tokens: 4, ...extra }),
    });
    const text = await res.body.text();
    return { status: res.statusCode, prefixBlocks: String(res.headers['x-switchyard-prefix-blocks']), route: String(res.headers['x-switchyard-route']), text };
  }

  it('does not record a prompt whose request the engine refused', async () => {
    const sim = await startSim({ model: testModel, port: 0, zeroLatency: true, maxModelLen: 256 });
    cleanups.push(() => sim.close());
    const url = await gateway([{ id: 'e0', url: sim.url, kind: 'vllm', models: [testModel], labels: {} }]);
    const tooLong = longPrompt();
    const first = await chatRaw(url, tooLong);
    expect(first.status).toBe(400);
    const [, blocks] = first.prefixBlocks.split('/').map(Number);
    expect(first.prefixBlocks).toBe(`0/${blocks}`);
    // Before, the refused prompt stayed recorded and the same prompt came back claiming every block.
    expect((await chatRaw(url, tooLong)).prefixBlocks).toBe(`0/${blocks}`);
  });

  it('drops the blocks an engine reports it did not hold, and says why it routed where it did', async () => {
    const sim = await startSim({ model: testModel, port: 0, zeroLatency: true });
    cleanups.push(() => sim.close());
    const url = await gateway([{ id: 'e0', url: sim.url, kind: 'vllm', models: [testModel], labels: {} }]);
    const prompt = longPrompt();
    const first = await chat(url, prompt);
    const [, blocks] = first.prefixBlocks.split('/').map(Number);
    expect((await chat(url, prompt)).prefixBlocks).toBe(`${blocks}/${blocks}`);

    const reset = await request(`${sim.url}/reset_prefix_cache`, { method: 'POST' });
    expect(reset.statusCode).toBe(200);
    await reset.body.dump();
    // The index still claims the prompt; the engine reports none of it cached, and the claim is taken back.
    expect(await chat(url, prompt)).toEqual({ prefixBlocks: `${blocks}/${blocks}`, cached: 0 });
    expect((await chat(url, prompt)).prefixBlocks).toBe(`0/${blocks}`);

    const streamed = await chatRaw(url, longPrompt(), { stream: true, max_tokens: 16 });
    expect(streamed.status).toBe(200);
    expect(streamed.route).toMatch(/^(miss-least-loaded|prefix-hit|prefix-shared|prefix-overloaded); predicted-ttft-ms=\d+$/);
    const metrics = await (await request(`${url}/metrics`)).body.text();
    expect(metricValue(metrics, 'switchyard_routing_prediction_error_count', { quantity: 'ttft' })).toBe(1);
    expect(metricValue(metrics, 'switchyard_routing_prediction_error_count', { quantity: 'tpot' })).toBe(1);
  });
});
