import { describe, expect, it } from 'vitest';
import { createPipeline, POLICY_NAMES } from '../../../router/routing/pipeline.js';
import { FILTER_NAMES, PICKER_NAMES, SCORER_NAMES } from '../../../router/routing/plugins.js';
import { engine, request, sequence } from './fixtures.js';

describe('routing pipeline', () => {
  it('exports the known names for the config schema', () => {
    expect([...POLICY_NAMES].sort()).toEqual([
      'aibrix-prefix-cache',
      'least-kv-cache',
      'least-request',
      'prefix-cache',
      'prefix-cache-v1',
      'random',
      'round-robin',
      'sglang-cache-aware',
    ]);
    expect([...FILTER_NAMES].sort()).toEqual(['adapter', 'exclude', 'healthy', 'model', 'pool']);
    expect([...SCORER_NAMES].sort()).toEqual(['least-kv-cache', 'least-request', 'prefix-cache', 'prefix-cache-v1', 'session']);
    expect([...PICKER_NAMES].sort()).toEqual(['aibrix-prefix-cache', 'max-score', 'random', 'round-robin', 'sglang-cache-aware']);
  });

  it('least-request sends the request to the engine with the fewest in flight', () => {
    const pipeline = createPipeline({ policy: 'least-request' });
    const decision = pipeline.route(request(), [
      engine('a', { inFlight: 5 }),
      engine('b', { inFlight: 1 }),
      engine('c', { inFlight: 3 }),
    ]);
    expect(decision?.engine.spec.id).toBe('b');
    expect(decision).toMatchObject({ policy: 'least-request', candidates: 3, score: 1 });
  });

  it('least-kv-cache sends the request to the engine with the least KV usage', () => {
    const pipeline = createPipeline({ policy: 'least-kv-cache' });
    const decision = pipeline.route(request(), [
      engine('a', { load: { kvUsage: 0.7 } }),
      engine('b', { load: { kvUsage: 0.9 } }),
      engine('c', { load: { kvUsage: 0.1 } }),
    ]);
    expect(decision?.engine.spec.id).toBe('c');
    expect(decision?.policy).toBe('least-kv-cache');
  });

  it('random uses the injected rng', () => {
    const pipeline = createPipeline({ policy: 'random' }, { rng: sequence(0.9, 0.1) });
    const engines = [engine('a'), engine('b'), engine('c')];
    expect(pipeline.route(request(), engines)?.engine.spec.id).toBe('c');
    expect(pipeline.route(request(), engines)?.engine.spec.id).toBe('a');
  });

  it('round-robin keeps its cursor across calls', () => {
    const pipeline = createPipeline({ policy: 'round-robin' });
    const engines = [engine('a'), engine('b'), engine('c')];
    const picks = Array.from({ length: 6 }, () => pipeline.route(request(), engines)?.engine.spec.id);
    expect(picks).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('defaults to prefix-cache, which without prefix or session features prefers the engine with less work', () => {
    const pipeline = createPipeline({});
    expect(pipeline.name).toBe('prefix-cache');
    expect(pipeline.route(request(), [engine('a', { inFlight: 2 }), engine('b')])?.engine.spec.id).toBe('b');
  });

  it('always applies the default filters before scoring', () => {
    const pipeline = createPipeline({ policy: 'least-request', filters: ['healthy'] });
    const engines = [
      engine('down', { healthy: false }),
      engine('other-model', { models: ['qwen'] }),
      engine('wrong-pool', { pool: 'a10' }),
      engine('tried'),
      engine('busy', { inFlight: 9, pool: 'h100' }),
    ];
    const decision = pipeline.route(request({ pools: ['h100'], exclude: new Set(['tried']) }), engines);
    expect(decision?.engine.spec.id).toBe('busy');
    expect(decision?.candidates).toBe(1);
  });

  it('returns undefined when no engine is a candidate', () => {
    const pipeline = createPipeline({ policy: 'round-robin' });
    expect(pipeline.route(request(), [])).toBeUndefined();
    expect(pipeline.route(request(), [engine('a', { healthy: false })])).toBeUndefined();
    expect(pipeline.route(request({ model: 'qwen' }), [engine('a')])).toBeUndefined();
  });

  it('combines explicit weighted scorers into a score in [0, 1]', () => {
    // a: least in flight but nearly full KV; b: busier but nearly empty. KV weighs 3x, so b wins.
    const engines = [
      engine('a', { inFlight: 0, load: { kvUsage: 0.95 } }),
      engine('b', { inFlight: 4, load: { kvUsage: 0.05 } }),
    ];
    const kvHeavy = createPipeline({
      scorers: [
        { name: 'least-request', weight: 1 },
        { name: 'least-kv-cache', weight: 3 },
      ],
    });
    const decision = kvHeavy.route(request(), engines);
    expect(decision?.engine.spec.id).toBe('b');
    expect(decision?.score).toBeGreaterThan(0);
    expect(decision?.score).toBeLessThanOrEqual(1);
    expect(kvHeavy.name).toBe('max-score(least-request*1,least-kv-cache*3)');

    const requestHeavy = createPipeline({
      scorers: [
        { name: 'least-request', weight: 3 },
        { name: 'least-kv-cache', weight: 1 },
      ],
    });
    expect(requestHeavy.route(request(), engines)?.engine.spec.id).toBe('a');
  });

  it('lets an explicit picker override the preset', () => {
    const pipeline = createPipeline({ policy: 'least-request', picker: 'round-robin' });
    const engines = [engine('a', { inFlight: 9 }), engine('b')];
    expect(pipeline.route(request(), engines)?.engine.spec.id).toBe('a');
    expect(pipeline.name).toBe('round-robin(least-request*1)');
  });

  it('rejects unknown names, listing the known ones', () => {
    expect(() => createPipeline({ picker: 'fastest' })).toThrow(
      'unknown routing picker "fastest"; known pickers: max-score, random, round-robin',
    );
    expect(() => createPipeline({ scorers: [{ name: 'prefix', weight: 1 }] })).toThrow(
      /unknown routing scorer "prefix"; known scorers: least-request, least-kv-cache/,
    );
    expect(() => createPipeline({ filters: ['lora'] })).toThrow(/unknown routing filter "lora"; known filters: healthy/);
    expect(() => createPipeline({ filters: ['toString'] })).toThrow(/unknown routing filter "toString"/);
    expect(() => createPipeline({ policy: 'fastest' as 'random' })).toThrow(
      'unknown routing policy "fastest"; known policies: random, round-robin, least-request, least-kv-cache',
    );
  });

  it('rejects a negative or non-finite weight', () => {
    expect(() => createPipeline({ scorers: [{ name: 'least-request', weight: -1 }] })).toThrow(/weight must be/);
    expect(() => createPipeline({ scorers: [{ name: 'least-request', weight: NaN }] })).toThrow(/weight must be/);
  });
});
