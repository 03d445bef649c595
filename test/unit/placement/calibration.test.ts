import { describe, expect, it } from 'vitest';
import { DEFAULT_ENGINE_PERF, type EnginePerf, type EngineSpec } from '../../../core/engine.js';
import { createRng } from '../../../core/hash.js';
import { TimingModel } from '../../../engine-sim/timing-model.js';
import { Calibration, CALIBRATION_WINDOW, MIN_DECODE_TOKENS } from '../../../router/placement/calibration.js';

const spec = (id = 'e', perf?: Partial<EnginePerf>): EngineSpec => ({ id, url: `http://${id}.test`, kind: 'vllm', models: ['m'], labels: {}, ...(perf === undefined ? {} : { perf }) });

/** calibration.ts bounds every estimate to this factor of its prior (MAX_FACTOR, not exported). */
const MAX_FACTOR = 20;

/** The engine-sim timing model's own step time: what the simulated engine takes. */
const simStepMs = (p: EnginePerf, kvTokens: number) => p.decodeBaseMs + (p.decodeMsPer1kKvTokens * kvTokens) / 1000;

/**
 * What the gateway would observe of `n` streamed answers from an engine running `truth` (engine-sim's formula):
 * a first token after `overheadMs` plus the prefill of the tokens ahead and its own plus one step over the KV in
 * flight; then tokens one step apart, each stretched by the share of the engine's time prefill took meanwhile.
 */
function feed(cal: Calibration, s: EngineSpec, truth: EnginePerf, n: number, rng: () => number, overheadMs = 0): void {
  for (let i = 0; i < n; i++) {
    const tokens = Math.round(200 + rng() * 16_000);
    const kv = Math.round(rng() * 300_000);
    cal.observeFirstToken(s, tokens, overheadMs + (1000 * tokens) / truth.prefillTokensPerSec + simStepMs(truth, kv), kv);
    const share = rng() * 0.6;
    cal.observeDecode(s, 64, simStepMs(truth, kv) / (1 - share), kv, share);
  }
}

function expectNear(actual: EnginePerf, truth: EnginePerf, tolerance: number): void {
  for (const key of ['prefillTokensPerSec', 'decodeBaseMs', 'decodeMsPer1kKvTokens'] as const) {
    const ratio = actual[key] / truth[key];
    expect(ratio, `${key}: ${actual[key]} against ${truth[key]}`).toBeGreaterThan(1 - tolerance);
    expect(ratio, `${key}: ${actual[key]} against ${truth[key]}`).toBeLessThan(1 + tolerance);
  }
}

const scaled = (p: EnginePerf, slowdown: number): EnginePerf => ({
  prefillTokensPerSec: p.prefillTokensPerSec / slowdown,
  decodeBaseMs: p.decodeBaseMs * slowdown,
  decodeMsPer1kKvTokens: p.decodeMsPer1kKvTokens * slowdown,
});

describe('Calibration', () => {
  it('starts from the defaults, an engine own configured perf field by field, and no overhead', () => {
    const cal = new Calibration();
    expect(cal.perf(spec())).toEqual(DEFAULT_ENGINE_PERF);
    expect(cal.overheadMs(spec())).toBe(0);
    expect(cal.perf(spec('p', { decodeBaseMs: 9 }))).toEqual({ ...DEFAULT_ENGINE_PERF, decodeBaseMs: 9 });
    const custom: EnginePerf = { prefillTokensPerSec: 5000, decodeBaseMs: 20, decodeMsPer1kKvTokens: 0.3 };
    expect(new Calibration(custom).perf(spec())).toEqual(custom);
  });

  it('converges to the true figures of an engine-sim engine, from its answers as the gateway sees them', () => {
    // A different engine from the prior: slower prefill, slower steps, a steeper KV slope.
    const truth: EnginePerf = { prefillTokensPerSec: 12_000, decodeBaseMs: 15, decodeMsPer1kKvTokens: 0.1 };
    const cal = new Calibration();
    feed(cal, spec(), truth, 4 * CALIBRATION_WINDOW, createRng(3));
    expectNear(cal.perf(spec()), truth, 0.15);
  });

  it('learns from a real TimingModel run: first-token and step times of engine-sim itself', () => {
    // An engine 2.5 times slower than the prior in every respect (one request at a time reads too narrow a range of
    // KV to tell a step's two terms apart: calibration then keeps the prior's shape, see below).
    const truth = scaled(DEFAULT_ENGINE_PERF, 2.5);
    const model = new TimingModel({ ...truth, maxNumBatchedTokens: 65_536 });
    const cal = new Calibration();
    const s = spec();
    const rng = createRng(11);
    // One request at a time (nothing queued ahead, no prefill sharing its steps), as the gateway measures it.
    for (let i = 0; i < 3 * CALIBRATION_WINDOW; i++) {
      const promptTokens = 500 + Math.floor(rng() * 60_000);
      const outputTokens = 16 + Math.floor(rng() * 48);
      model.submit({ id: `r${i}`, promptTokens, outputTokens, blockHashes: [] });
      let now = 0;
      let first = NaN;
      let last = NaN;
      for (let steps = 0; !model.idle && steps < 10_000; steps++) {
        const step = model.step(now);
        now += step.durationMs;
        for (const event of step.events) {
          if (event.type === 'first_token') first = event.atMs;
          if (event.type === 'finished') last = event.atMs;
        }
      }
      expect(model.idle).toBe(true);
      // The KV of the first step is the prompt; during decode it grows from the prompt to prompt + output.
      cal.observeFirstToken(s, promptTokens, first, promptTokens);
      cal.observeDecode(s, outputTokens, (last - first) / (outputTokens - 1), promptTokens + outputTokens / 2, 0);
    }
    expectNear(cal.perf(s), truth, 0.15);
    expect(cal.overheadMs(s)).toBeLessThan(5);
  });

  it('keeps the prior shape of a step when the KV observed spans too narrow a range to tell base from slope', () => {
    const truth = scaled(DEFAULT_ENGINE_PERF, 2);
    const cal = new Calibration();
    const s = spec();
    const rng = createRng(4);
    for (let i = 0; i < 3 * CALIBRATION_WINDOW; i++) {
      // 10,000 to 12,000 KV tokens: the KV term changes by 0.09 ms against a 13 ms step.
      const kv = 10_000 + Math.round(rng() * 2000);
      cal.observeDecode(s, 64, simStepMs(truth, kv), kv, 0);
    }
    expectNear(cal.perf(s), { ...truth, prefillTokensPerSec: DEFAULT_ENGINE_PERF.prefillTokensPerSec }, 0.05);
  });

  it('follows an engine that turns half as fast: mostly within one window, fully within a few', () => {
    const before: EnginePerf = { prefillTokensPerSec: 12_000, decodeBaseMs: 15, decodeMsPer1kKvTokens: 0.1 };
    const after = scaled(before, 2);
    const cal = new Calibration();
    const rng = createRng(5);
    feed(cal, spec(), before, 4 * CALIBRATION_WINDOW, rng, 40);
    expectNear(cal.perf(spec()), before, 0.15);
    feed(cal, spec(), after, CALIBRATION_WINDOW, rng, 40);
    // After one window the newer answers weigh most: each figure has moved at least half way (in ratio) to the new one.
    const moved = cal.perf(spec());
    expect(before.prefillTokensPerSec / moved.prefillTokensPerSec).toBeGreaterThan(Math.SQRT2);
    expect(moved.decodeBaseMs / before.decodeBaseMs).toBeGreaterThan(Math.SQRT2);
    expect(moved.decodeMsPer1kKvTokens / before.decodeMsPer1kKvTokens).toBeGreaterThan(Math.SQRT2);
    feed(cal, spec(), after, 2 * CALIBRATION_WINDOW, rng, 40);
    expectNear(cal.perf(spec()), after, 0.15);
  });

  it('learns the fixed latency of a first token apart from the prefill rate', () => {
    // 100 ms of HTTP and CPU on every answer of a 30K tokens/s engine. Read as prefill, a cached prompt's
    // 100 ms would make it look like a few thousand tokens per second.
    const truth = DEFAULT_ENGINE_PERF;
    const cal = new Calibration();
    const s = spec();
    const rng = createRng(9);
    for (let i = 0; i < 3 * CALIBRATION_WINDOW; i++) {
      const tokens = Math.round(rng() * 8000);
      const kv = Math.round(rng() * 100_000);
      cal.observeFirstToken(s, tokens, 100 + (1000 * tokens) / truth.prefillTokensPerSec + simStepMs(truth, kv), kv);
    }
    expect(cal.perf(s).prefillTokensPerSec / truth.prefillTokensPerSec).toBeGreaterThan(0.85);
    expect(cal.perf(s).prefillTokensPerSec / truth.prefillTokensPerSec).toBeLessThan(1.15);
    expect(cal.overheadMs(s)).toBeGreaterThan(85);
    expect(cal.overheadMs(s)).toBeLessThan(115);
    // The steps were not observed: they keep their prior.
    expect(cal.perf(s).decodeBaseMs).toBeCloseTo(truth.decodeBaseMs, 9);
  });

  it('takes the prefill share out of the observed gaps', () => {
    // Every gap is twice a step: half the engine's time went to others' prefill.
    const cal = new Calibration();
    const s = spec();
    for (let i = 0; i < 3 * CALIBRATION_WINDOW; i++) {
      const kv = (i % 10) * 30_000;
      cal.observeDecode(s, 100, 2 * simStepMs(DEFAULT_ENGINE_PERF, kv), kv, 0.5);
    }
    expectNear(cal.perf(s), DEFAULT_ENGINE_PERF, 0.05);
  });

  it('ignores answers that tell nothing: too few tokens, impossible numbers', () => {
    const cal = new Calibration();
    const s = spec();
    cal.observeDecode(s, MIN_DECODE_TOKENS - 1, 1000, 10_000, 0);
    cal.observeDecode(s, 100, Number.NaN, 10_000, 0);
    cal.observeDecode(s, 100, -5, 10_000, 0);
    cal.observeDecode(s, 100, Number.POSITIVE_INFINITY, 10_000, 0);
    cal.observeFirstToken(s, 1000, Number.NaN, 0);
    cal.observeFirstToken(s, -1000, 50, 0);
    cal.observeFirstToken(s, 1000, Number.POSITIVE_INFINITY, 0);
    const p = cal.perf(s);
    for (const key of ['prefillTokensPerSec', 'decodeBaseMs', 'decodeMsPer1kKvTokens'] as const) {
      expect(Number.isFinite(p[key])).toBe(true);
      expect(p[key] / DEFAULT_ENGINE_PERF[key]).toBeCloseTo(1, 6);
    }
    expect(cal.overheadMs(s)).toBe(0);
  });

  it('bounds every figure to MAX_FACTOR of its prior, however absurd the answers', () => {
    const slowest = new Calibration();
    const fastest = new Calibration();
    const s = spec();
    // Long enough for the prior's own pseudo-observations to have faded: the answers alone decide, and the bound holds.
    for (let i = 0; i < 20 * CALIBRATION_WINDOW; i++) {
      const tokens = 1000 + 100 * (i % 20);
      const kv = 10_000 * (i % 20);
      slowest.observeFirstToken(s, tokens, 1e9 * tokens, kv);
      slowest.observeDecode(s, 100, 1e9 * (1 + kv / 1000), kv, 0);
      fastest.observeFirstToken(s, tokens, 1e-9 * tokens, kv);
      fastest.observeDecode(s, 100, 1e-9 * (1 + kv / 1000), kv, 0);
    }
    const slow = slowest.perf(s);
    const fast = fastest.perf(s);
    expect(slow.prefillTokensPerSec).toBeCloseTo(DEFAULT_ENGINE_PERF.prefillTokensPerSec / MAX_FACTOR, 6);
    expect(slow.decodeBaseMs).toBeCloseTo(DEFAULT_ENGINE_PERF.decodeBaseMs * MAX_FACTOR, 6);
    expect(slow.decodeMsPer1kKvTokens).toBeCloseTo(DEFAULT_ENGINE_PERF.decodeMsPer1kKvTokens * MAX_FACTOR, 9);
    expect(fast.prefillTokensPerSec).toBeCloseTo(DEFAULT_ENGINE_PERF.prefillTokensPerSec * MAX_FACTOR, 6);
    expect(fast.decodeBaseMs).toBeCloseTo(DEFAULT_ENGINE_PERF.decodeBaseMs / MAX_FACTOR, 9);
    expect(fast.decodeMsPer1kKvTokens).toBeCloseTo(DEFAULT_ENGINE_PERF.decodeMsPer1kKvTokens / MAX_FACTOR, 9);
    for (const p of [slow, fast]) for (const v of Object.values(p)) expect(Number.isFinite(v)).toBe(true);
    expect(Number.isFinite(slowest.overheadMs(s))).toBe(true);
  });

  it('keeps engines apart, and forget() sends one back to its prior', () => {
    const cal = new Calibration();
    const a = spec('a');
    const b = spec('b', { prefillTokensPerSec: 20_000 });
    const truth = scaled(DEFAULT_ENGINE_PERF, 3);
    feed(cal, a, truth, 3 * CALIBRATION_WINDOW, createRng(1), 30);
    feed(cal, b, truth, 3 * CALIBRATION_WINDOW, createRng(2), 30);
    expectNear(cal.perf(a), truth, 0.15);
    expect(cal.overheadMs(a)).toBeGreaterThan(10);
    cal.forget('a');
    expect(cal.perf(a)).toEqual(DEFAULT_ENGINE_PERF);
    expect(cal.overheadMs(a)).toBe(0);
    expectNear(cal.perf(b), truth, 0.15);
    cal.forget('b');
    expect(cal.perf(b)).toEqual({ ...DEFAULT_ENGINE_PERF, prefillTokensPerSec: 20_000 });
  });

  it('learns base and slope that differ from the prior by different factors', () => {
    // Prior (H100 defaults): 6.5 ms + 0.044 ms / 1K. Truth: 15 ms (2.3x) + 0.2 ms / 1K (4.5x).
    const truth: EnginePerf = { prefillTokensPerSec: 30_000, decodeBaseMs: 15, decodeMsPer1kKvTokens: 0.2 };
    const cal = new Calibration();
    const spec = { id: 'e', url: 'x', kind: 'vllm' as const, models: ['m'], labels: {} };
    const rng = createRng(3);
    for (let i = 0; i < 20 * CALIBRATION_WINDOW; i++) {
      const kv = Math.round(rng() * 300_000);
      cal.observeDecode(spec, 64, truth.decodeBaseMs + (truth.decodeMsPer1kKvTokens * kv) / 1000, kv, 0);
    }
    const p = cal.perf(spec);
    expect(p.decodeBaseMs / truth.decodeBaseMs).toBeLessThan(1.15);
    expect(p.decodeMsPer1kKvTokens / truth.decodeMsPer1kKvTokens).toBeGreaterThan(0.85);
  });
});
