import { describe, expect, it } from 'vitest';
import { blockHashes } from '../../../engine-sim/prefix-cache.js';
import { DEFAULT_TIMING, type EngineEvent, type ModelRequest, type StepResult, TimingModel } from '../../../engine-sim/timing-model.js';

/** A request whose prompt is `promptTokens` distinct tokens starting at `first`; same `first`, same prefix. */
function request(id: string, promptTokens: number, outputTokens: number, first = 0): ModelRequest {
  const prompt = Array.from({ length: promptTokens }, (_, i) => first + i);
  return { id, promptTokens, outputTokens, blockHashes: blockHashes(prompt, 16) };
}

interface Run {
  steps: StepResult[];
  events: EngineEvent[];
  endMs: number;
}

/** Steps the model on a virtual clock until it is idle, as the trace replayer will. */
function runUntilIdle(model: TimingModel, startMs = 0, maxSteps = 100_000): Run {
  const run: Run = { steps: [], events: [], endMs: startMs };
  for (let i = 0; i < maxSteps && !model.idle; i++) {
    const step = model.step(run.endMs);
    run.steps.push(step);
    run.events.push(...step.events);
    run.endMs += step.durationMs;
  }
  expect(model.idle).toBe(true);
  return run;
}

const eventAt = (events: EngineEvent[], type: EngineEvent['type'], id: string) => events.find((e) => e.type === type && e.id === id);

describe('TimingModel step duration', () => {
  it('charges prefill at ~30,000 tokens/s plus the base step cost', () => {
    const model = new TimingModel();
    model.submit(request('a', 3000, 1));
    const step = model.step(0);
    expect(step.prefillTokens).toBe(3000);
    expect(step.kvTokens).toBe(3000);
    expect(step.durationMs).toBeCloseTo(6.5 + 100 + 0.044 * 3, 9);
    // Dominated by the prefill term: within 10% of tokens / 30,000 s.
    expect(Math.abs(step.durationMs - 100) / 100).toBeLessThan(0.1);
    expect(step.events).toEqual([{ type: 'first_token', id: 'a', atMs: step.durationMs, cachedTokens: 0 }, { type: 'finished', id: 'a', atMs: step.durationMs }]);
  });

  it('charges a decode step 6.5 ms + 0.044 ms per 1,000 KV tokens in the batch', () => {
    const model = new TimingModel();
    model.submit(request('a', 2000, 10, 0));
    model.submit(request('b', 1000, 10, 50_000));
    model.step(0);
    const decode = model.step(100);
    expect(decode.prefillTokens).toBe(0);
    expect(decode.batchSize).toBe(2);
    // Each request feeds back its first token: contexts of 2001 and 1001 tokens.
    expect(decode.kvTokens).toBe(2001 + 1001);
    expect(decode.durationMs).toBeCloseTo(6.5 + 0.044 * 3.002, 9);
    expect(decode.events.map((e) => e.type)).toEqual(['token', 'token']);
  });

  it('grows decode time with batch size and context', () => {
    const small = new TimingModel();
    const large = new TimingModel();
    small.submit(request('a', 100, 5));
    for (let i = 0; i < 64; i++) large.submit(request(`r${i}`, 100, 5, i * 1000));
    small.step(0);
    large.step(0);
    const smallDecode = small.step(100);
    const largeDecode = large.step(100);
    expect(largeDecode.prefillTokens).toBe(0);
    expect(largeDecode.kvTokens).toBe(64 * smallDecode.kvTokens);
    expect(largeDecode.durationMs - smallDecode.durationMs).toBeCloseTo((0.044 * 63 * 101) / 1000, 9);
  });

  it('chunks long prefills at max_num_batched_tokens', () => {
    const model = new TimingModel();
    model.submit(request('a', 20_000, 1));
    const { steps, events } = runUntilIdle(model);
    expect(steps.map((s) => s.prefillTokens)).toEqual([8192, 8192, 3616]);
    const firstToken = eventAt(events, 'first_token', 'a')!;
    expect(firstToken.atMs).toBeCloseTo(steps.reduce((t, s) => t + s.durationMs, 0), 9);
  });
});

describe('TimingModel batching', () => {
  it('admits waiting requests up to max_num_seqs', () => {
    const model = new TimingModel({ maxNumSeqs: 4 });
    for (let i = 0; i < 6; i++) model.submit(request(`r${i}`, 32, 50, i * 1000));
    const step = model.step(0);
    expect(step.batchSize).toBe(4);
    expect(model.numRunning).toBe(4);
    expect(model.numWaiting).toBe(2);
  });

  it('admits waiting requests up to the token budget, chunking the last one', () => {
    const model = new TimingModel({ maxNumBatchedTokens: 100 });
    for (let i = 0; i < 3; i++) model.submit(request(`r${i}`, 60, 5, i * 1000));
    const step = model.step(0);
    expect(step.batchSize).toBe(2);
    expect(step.prefillTokens).toBe(100);
    expect(model.numWaiting).toBe(1);
    // Next step: r0 decodes (1 token), r1 finishes its prefill (20), r2 gets the rest of the budget (60).
    const next = model.step(step.durationMs);
    expect(next.batchSize).toBe(3);
    expect(next.prefillTokens).toBe(20 + 60);
  });

  it('makes requests wait while the KV cache is full', () => {
    const model = new TimingModel({ kvCapacityTokens: 64 });
    model.submit(request('a', 40, 20, 0));
    model.submit(request('b', 30, 4, 1000));
    model.step(0);
    expect(model.numRunning).toBe(1);
    expect(model.numWaiting).toBe(1);
    expect(model.kvUsage).toBe(0.75);
    const { events } = runUntilIdle(model, 10);
    expect(eventAt(events, 'first_token', 'b')!.atMs).toBeGreaterThan(eventAt(events, 'finished', 'a')!.atMs);
  });

  it('preempts the newest running request when blocks run out, recomputes it and counts it', () => {
    const model = new TimingModel({ kvCapacityTokens: 16 * 6 });
    model.submit(request('old', 40, 40, 0));
    model.submit(request('new', 40, 40, 1000));
    const { events } = runUntilIdle(model);
    const preempted = events.filter((e) => e.type === 'preempted');
    expect(preempted.length).toBeGreaterThan(0);
    expect(preempted[0]!.id).toBe('new');
    expect(model.counters.preemptions).toBe(preempted.length);
    // Both still produce every token exactly once.
    for (const id of ['old', 'new']) {
      const tokens = events.filter((e) => (e.type === 'token' || e.type === 'first_token') && e.id === id);
      expect(tokens).toHaveLength(40);
      expect(eventAt(events, 'finished', id)).toBeDefined();
    }
    expect(model.counters.generationTokens).toBe(80);
    // Re-admissions after preemption are not new prefix-cache queries (vLLM counts them separately).
    expect(model.counters.prefixQueryTokens).toBe(80);
    expect(model.kvUsage).toBe(0);
  });

  it('rejects a request that could never fit in the KV cache', () => {
    const model = new TimingModel({ kvCapacityTokens: 1600 });
    expect(() => model.submit(request('huge', 1500, 200))).toThrow(RangeError);
  });
});

describe('TimingModel prefix caching', () => {
  it('reuses a cached prefix: whole blocks reported, shorter time to first token', () => {
    const model = new TimingModel();
    model.submit(request('cold', 2000, 4));
    const cold = runUntilIdle(model);
    model.submit(request('warm', 2000, 4));
    const warm = runUntilIdle(model, cold.endMs);
    const coldFirst = eventAt(cold.events, 'first_token', 'cold') as Extract<EngineEvent, { type: 'first_token' }>;
    const warmFirst = eventAt(warm.events, 'first_token', 'warm') as Extract<EngineEvent, { type: 'first_token' }>;
    expect(coldFirst.cachedTokens).toBe(0);
    // Never the whole prompt: the last token must be computed to sample from it.
    expect(warmFirst.cachedTokens).toBe(Math.floor(1999 / 16) * 16);
    expect(warmFirst.atMs - cold.endMs).toBeLessThan(coldFirst.atMs / 5);
    expect(model.counters.prefixQueryTokens).toBe(4000);
    expect(model.counters.prefixHitTokens).toBe(warmFirst.cachedTokens);
  });

  it('caches output blocks too, when their hashes are given', () => {
    const model = new TimingModel();
    const sequence = Array.from({ length: 64 }, (_, i) => i);
    const first: ModelRequest = { id: 'turn1', promptTokens: 32, outputTokens: 32, blockHashes: blockHashes(sequence, 16) };
    model.submit(first);
    runUntilIdle(model);
    const followUp: ModelRequest = { id: 'turn2', promptTokens: 80, outputTokens: 1, blockHashes: blockHashes([...sequence, ...Array(16).fill(9)], 16) };
    model.submit(followUp);
    const { events } = runUntilIdle(model);
    // 63 of the 64 tokens were computed (the last sampled one never is): 3 full blocks.
    expect(eventAt(events, 'first_token', 'turn2')).toMatchObject({ cachedTokens: 48 });
  });

  it('frees an aborted request’s blocks', () => {
    const model = new TimingModel({ kvCapacityTokens: 1600 });
    model.submit(request('a', 800, 100));
    model.step(0);
    expect(model.kvUsage).toBeGreaterThan(0);
    expect(model.abort('a')).toBe(true);
    expect(model.kvUsage).toBe(0);
    expect(model.idle).toBe(true);
    expect(model.abort('a')).toBe(false);
  });

  it('accounts for instantly served requests in the cache and counters', () => {
    const model = new TimingModel();
    expect(model.serveInstantly(request('a', 100, 10))).toBe(0);
    expect(model.serveInstantly(request('b', 100, 10))).toBe(96);
    expect(model.counters).toMatchObject({ promptTokens: 200, generationTokens: 20, prefixQueryTokens: 200, prefixHitTokens: 96 });
    expect(model.kvUsage).toBe(0);
  });
});

describe('TimingModel parameters', () => {
  it('defaults to Llama-3.1-8B BF16 on one H100', () => {
    expect(new TimingModel().params).toEqual(DEFAULT_TIMING);
    expect(DEFAULT_TIMING).toMatchObject({ prefillTokensPerSec: 30_000, decodeBaseMs: 6.5, decodeMsPer1kKvTokens: 0.044, maxNumSeqs: 256, maxNumBatchedTokens: 8192, kvCapacityTokens: 440_000 });
  });

  it('rejects non-positive parameters', () => {
    expect(() => new TimingModel({ prefillTokensPerSec: 0 })).toThrow(RangeError);
    expect(() => new TimingModel({ maxNumSeqs: -1 })).toThrow(RangeError);
  });
});
