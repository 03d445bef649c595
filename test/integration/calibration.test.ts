import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import type { EnginePerf, EngineSpec } from '../../core/engine.js';
import { createRng } from '../../core/hash.js';
import { startSim } from '../../engine-sim/server.js';
import { authHeaders, metricValue, startGateway, testModel } from '../helpers/cluster.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** Engine time runs this much faster than the wall clock in both simulated engines. */
const TIME_SCALE = 5;

/**
 * The fast engine as the gateway sees it, on the wall clock: slow enough that a step (20 ms) and a prompt's prefill
 * (tens to hundreds of ms) stand well above the milliseconds of HTTP and event-loop latency of a loaded machine.
 * The slow one is the same engine at half the speed: every time doubled.
 */
const FAST_WALL: EnginePerf = { prefillTokensPerSec: 40_000, decodeBaseMs: 20, decodeMsPer1kKvTokens: 0.1 };
const SLOW_WALL: EnginePerf = { prefillTokensPerSec: 20_000, decodeBaseMs: 40, decodeMsPer1kKvTokens: 0.2 };

/** The simulator's figures in engine time for the given wall-clock ones. */
const engineTime = (wall: EnginePerf): EnginePerf => ({
  prefillTokensPerSec: wall.prefillTokensPerSec / TIME_SCALE,
  decodeBaseMs: wall.decodeBaseMs * TIME_SCALE,
  decodeMsPer1kKvTokens: wall.decodeMsPer1kKvTokens * TIME_SCALE,
});

// Few users: enough for a queue to form on each engine, few enough that where a request goes depends on how fast
// its engine is believed to be (with many, both engines are always busy and any policy splits by throughput).
const USERS = 4;
const MAX_REQUESTS = 400;
const DURATION_MS = 16_000;
// At least calibration's MIN_DECODE_TOKENS, so each answer's gaps teach the step time.
const OUTPUT_TOKENS = 12;

describe('calibration in the live gateway', () => {
  it('sends an engine at half speed clearly less traffic, and its calibrated figures show it about half as fast', async () => {
    const fast = await startSim({ model: testModel, port: 0, timeScale: TIME_SCALE, seed: 1, ...engineTime(FAST_WALL) });
    cleanups.push(() => fast.close());
    const slow = await startSim({ model: testModel, port: 0, timeScale: TIME_SCALE, seed: 2, ...engineTime(SLOW_WALL) });
    cleanups.push(() => slow.close());
    const engines: EngineSpec[] = [
      { id: 'fast', url: fast.url, kind: 'vllm', models: [testModel], labels: {} },
      { id: 'slow', url: slow.url, kind: 'vllm', models: [testModel], labels: {} },
    ];
    // The default policy, both engines believed to be the fast one until their answers say otherwise.
    const gateway = await startGateway(engines, { routing: { engineModel: FAST_WALL } });
    cleanups.push(() => gateway.close());
    const url = await gateway.listen();

    // A bounded closed loop: each user sends a streamed request with a prompt no other request shares (the prefix
    // index has nothing to say), of a length drawn between several hundred and some 15,000 tokens so first-token
    // times tell the prefill rate from the fixed latency, and sends the next when the answer has ended.
    const served = { fast: 0, slow: 0 };
    // What the second half of the run served, once the engines' answers have calibrated them.
    const late = { fast: 0, slow: 0 };
    const failures: string[] = [];
    let sent = 0;
    const deadline = Date.now() + DURATION_MS;
    const halfway = deadline - DURATION_MS / 2;
    const user = async (u: number) => {
      const rng = createRng(1000 + u);
      while (Date.now() < deadline && sent < MAX_REQUESTS) {
        const n = sent++;
        const words = 150 + Math.floor(rng() * 3000);
        const content = `user ${u} request ${n}: ` + Array.from({ length: words }, () => `w${Math.floor(rng() * 1e6)}`).join(' ');
        const res = await request(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: authHeaders(),
          body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content }], max_tokens: OUTPUT_TOKENS, stream: true }),
        });
        const text = await res.body.text();
        if (res.statusCode !== 200 || !text.includes('[DONE]')) {
          failures.push(`${res.statusCode}: ${text.slice(0, 200)}`);
          continue;
        }
        const pod = res.headers['x-switchyard-pod'];
        if (pod !== 'fast' && pod !== 'slow') {
          failures.push(`answered by ${String(pod)}`);
          continue;
        }
        served[pod]++;
        if (Date.now() > halfway) late[pod]++;
      }
    };
    await Promise.all(Array.from({ length: USERS }, (_, u) => user(u)));

    expect(failures).toEqual([]);
    const total = served.fast + served.slow;
    const seenTraffic = `served ${JSON.stringify(served)}, in the second half ${JSON.stringify(late)}`;
    expect(total, seenTraffic).toBeGreaterThan(50);
    expect(served.slow, seenTraffic).toBeGreaterThan(0);
    // Calibrated, the slow engine costs twice the time for the same work and the default policy sends it clearly
    // less than half: about a quarter here, once calibrated. Believed as fast as the other (calibration off), it
    // gets 36-42% of the run and over 40% of its second half.
    expect(served.slow / total, seenTraffic).toBeLessThan(0.4);
    expect(late.slow / (late.fast + late.slow), seenTraffic).toBeLessThan(0.35);

    const metrics = await (await request(`${url}/metrics`)).body.text();
    const figure = (name: string, engine: string) => metricValue(metrics, name, { engine });
    const prefill = { fast: figure('switchyard_engine_prefill_tokens_per_second', 'fast'), slow: figure('switchyard_engine_prefill_tokens_per_second', 'slow') };
    const base = { fast: figure('switchyard_engine_step_base_ms', 'fast'), slow: figure('switchyard_engine_step_base_ms', 'slow') };
    const seen = `prefill tokens/s ${JSON.stringify(prefill)}, step base ms ${JSON.stringify(base)}`;
    for (const v of [prefill.fast, prefill.slow, base.fast, base.slow]) expect(v, seen).toBeGreaterThan(0);
    // About half as fast: the truth is 0.5 and 2; generous bands for a loaded 2-core machine.
    expect(prefill.slow / prefill.fast, seen).toBeGreaterThan(0.3);
    expect(prefill.slow / prefill.fast, seen).toBeLessThan(0.75);
    expect(base.slow / base.fast, seen).toBeGreaterThan(1.3);
    expect(base.slow / base.fast, seen).toBeLessThan(3.5);
  }, 60_000);
});
