import { NO_LOAD } from '../../../router/placement/in-flight-load.js';
import { afterEach, describe, expect, it } from 'vitest';
import type { EngineSpec } from '../../../core/engine.js';
import { servedModels } from '../../../router/engines/models.js';
import { EngineRegistry, type EngineRegistryOptions } from '../../../router/engines/registry.js';
import { startFakeEngine, vllmMetrics, waitFor, type FakeEngine } from './fake-engine.js';

const engines: FakeEngine[] = [];
const registries: EngineRegistry[] = [];

afterEach(async () => {
  await Promise.all(registries.splice(0).map((r) => r.stop()));
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

async function fake(init?: Parameters<typeof startFakeEngine>[0]): Promise<FakeEngine> {
  const engine = await startFakeEngine(init);
  engines.push(engine);
  return engine;
}

function spec(id: string, engine: FakeEngine, models: string[] = ['llama'], labels: Record<string, string> = {}): EngineSpec {
  return { id, url: engine.url, kind: 'vllm', models, labels };
}

interface Events {
  health: [string, boolean][];
  scrapeErrors: [string, string][];
}

function registry(specs: EngineSpec[], opts: Partial<EngineRegistryOptions> = {}): { registry: EngineRegistry; events: Events } {
  const events: Events = { health: [], scrapeErrors: [] };
  const r = new EngineRegistry(specs, {
    healthIntervalMs: 30,
    healthTimeoutMs: 200,
    scrapeIntervalMs: 30,
    scrapeTimeoutMs: 200,
    onHealthChange: (id, healthy) => events.health.push([id, healthy]),
    onScrapeError: (id, err) => events.scrapeErrors.push([id, err.message]),
    ...opts,
  });
  registries.push(r);
  return { registry: r, events };
}

const byId = (r: EngineRegistry, id: string) => r.snapshot().find((s) => s.spec.id === id);

describe('EngineRegistry', () => {
  it('starts engines unhealthy and resolves start() after the first probe and scrape', async () => {
    const up = await fake({ metricsText: vllmMetrics(3, 1, 0.25) });
    const down = await fake({ healthStatus: 503 });
    const { registry: r, events } = registry([spec('up', up), spec('down', down)], {
      healthIntervalMs: 60_000,
      scrapeIntervalMs: 60_000,
    });
    expect(r.snapshot().map((s) => s.healthy)).toEqual([false, false]);

    await r.start();
    const [a, b] = r.snapshot();
    expect(a).toMatchObject({ healthy: true, inFlight: 0, load: { running: 3, waiting: 1, kvUsage: 0.25 } });
    expect(a.load?.scrapedAt).toBeGreaterThan(Date.now() - 5_000);
    expect(b).toMatchObject({ healthy: false, load: undefined });
    expect(down.state.metricsRequests).toBe(0);
    expect(events.health).toEqual([['up', true]]);
    await expect(r.start()).rejects.toThrow(/already started/);
  });

  it('marks an engine unhealthy after two failed probes and re-admits it on the next good one', async () => {
    const e = await fake();
    const { registry: r, events } = registry([spec('e', e)]);
    await r.start();
    expect(byId(r, 'e')?.healthy).toBe(true);

    e.state.healthStatus = 500;
    const probesAtFailure = e.state.healthRequests;
    await waitFor('the engine to turn unhealthy', () => byId(r, 'e')?.healthy === false);
    expect(e.state.healthRequests - probesAtFailure).toBeGreaterThanOrEqual(2);
    expect(byId(r, 'e')?.load).toBeUndefined();

    e.state.healthStatus = 200;
    await waitFor('the engine to be re-admitted', () => byId(r, 'e')?.healthy === true);
    await waitFor('a fresh scrape after re-admission', () => byId(r, 'e')?.load !== undefined);
    expect(events.health).toEqual([
      ['e', true],
      ['e', false],
      ['e', true],
    ]);
  });

  it('does not eject on a single failed probe', async () => {
    const e = await fake();
    const { registry: r } = registry([spec('e', e)], { probeFailureThreshold: 3 });
    await r.start();
    e.state.healthStatus = 500;
    const start = e.state.healthRequests;
    await waitFor('two failed probes', () => e.state.healthRequests >= start + 2);
    expect(byId(r, 'e')?.healthy).toBe(true);
    await waitFor('the third failed probe to eject', () => byId(r, 'e')?.healthy === false);
  });

  it('marks an engine whose server was killed unhealthy', async () => {
    const e = await fake();
    const other = await fake();
    const { registry: r } = registry([spec('e', e), spec('other', other)]);
    await r.start();
    await e.close();
    await waitFor('the killed engine to turn unhealthy', () => byId(r, 'e')?.healthy === false);
    expect(byId(r, 'other')?.healthy).toBe(true);
  });

  it('ejects after failureThreshold consecutive reported failures; a success resets the count', async () => {
    const e = await fake();
    const { registry: r, events } = registry([spec('e', e)], { healthIntervalMs: 60_000, failureThreshold: 3 });
    await r.start();

    r.reportFailure('e');
    r.reportFailure('e');
    r.reportSuccess('e');
    r.reportFailure('e');
    r.reportFailure('e');
    expect(byId(r, 'e')?.healthy).toBe(true);
    r.reportFailure('e');
    expect(byId(r, 'e')).toMatchObject({ healthy: false, load: undefined });
    expect(events.health).toEqual([
      ['e', true],
      ['e', false],
    ]);
    // More failures while ejected change nothing; /health still answers 200, but no probe has run since.
    r.reportFailure('e');
    expect(events.health).toHaveLength(2);
  });

  it('re-admits an ejected engine only through a probe started after the ejection', async () => {
    let open!: () => void;
    const e = await fake();
    const { registry: r, events } = registry([spec('e', e)], { healthIntervalMs: 40, healthTimeoutMs: 5_000 });
    await r.start();

    // Hold the next probe inside the engine, then eject while it is in flight.
    e.state.healthGate = new Promise<void>((resolve) => (open = resolve));
    const before = e.state.healthRequests;
    await waitFor('a probe to be in flight', () => e.state.healthRequests === before + 1);
    for (let i = 0; i < 3; i++) r.reportFailure('e');
    expect(byId(r, 'e')?.healthy).toBe(false);
    const probesAtEjection = e.state.healthRequests;

    e.state.healthGate = undefined;
    open();
    await waitFor('re-admission', () => byId(r, 'e')?.healthy === true);
    // The probe that was in flight answered 200 first, yet only a later probe may re-admit.
    expect(e.state.healthRequests).toBeGreaterThan(probesAtEjection);
    expect(events.health).toEqual([
      ['e', true],
      ['e', false],
      ['e', true],
    ]);
  });

  it('updates load from periodic scrapes and reports scrape errors without touching health', async () => {
    const e = await fake({ metricsText: vllmMetrics(1, 0, 0.1) });
    const { registry: r, events } = registry([spec('e', e)], { healthIntervalMs: 60_000 });
    await r.start();
    expect(byId(r, 'e')?.load?.kvUsage).toBe(0.1);

    e.state.metricsText = vllmMetrics(9, 4, 0.8);
    await waitFor('the new load', () => byId(r, 'e')?.load?.kvUsage === 0.8);
    expect(byId(r, 'e')?.load).toMatchObject({ running: 9, waiting: 4 });

    e.state.metricsStatus = 404;
    await waitFor('a scrape error', () => events.scrapeErrors.length > 0);
    expect(events.scrapeErrors[0]).toEqual(['e', 'engine "e": GET /metrics answered 404']);
    expect(byId(r, 'e')).toMatchObject({ healthy: true, load: { kvUsage: 0.8 } });

    e.state.metricsStatus = 200;
    e.state.metricsText = 'sglang:num_running_reqs 1\n';
    const errors = events.scrapeErrors.length;
    await waitFor('an unparseable scrape', () => events.scrapeErrors.length > errors);
    expect(events.scrapeErrors.at(-1)?.[1]).toMatch(/no vllm load metrics/);
  });

  it('counts in-flight requests, never below zero, in immutable snapshots', async () => {
    const e = await fake();
    const { registry: r } = registry([spec('e', e)], { healthIntervalMs: 60_000, scrapeIntervalMs: 60_000 });
    await r.start();

    const first = r.snapshot();
    expect(r.snapshot()).toBe(first);
    r.acquire('e', NO_LOAD);
    r.acquire('e', NO_LOAD);
    const second = r.snapshot();
    expect(second).not.toBe(first);
    expect(second[0].inFlight).toBe(2);
    expect(first[0].inFlight).toBe(0);
    r.release('e', NO_LOAD);
    r.release('e', NO_LOAD);
    r.release('e', NO_LOAD);
    expect(r.snapshot()[0].inFlight).toBe(0);
    expect(second[0].inFlight).toBe(2);
    // Unknown ids are ignored: the engine may have been removed while its requests finish.
    expect(() => r.release('gone', NO_LOAD)).not.toThrow();
    expect(() => r.client('gone')).toThrow('unknown engine "gone"');
  });

  it('adds and removes engines at runtime', async () => {
    const a = await fake();
    const b = await fake({ metricsText: vllmMetrics(2, 0, 0.5) });
    const { registry: r } = registry([spec('a', a)]);
    await r.start();
    const clientA = r.client('a');
    r.acquire('a', NO_LOAD);

    await r.setEngines([spec('a', a), spec('b', b, ['qwen'])]);
    expect(r.client('a')).toBe(clientA);
    expect(byId(r, 'a')?.inFlight).toBe(1);
    expect(byId(r, 'b')).toMatchObject({ healthy: true, load: { kvUsage: 0.5 } });
    expect(servedModels(r.snapshot())).toEqual(['llama', 'qwen']);

    await r.setEngines([spec('b', b, ['qwen'])]);
    expect(r.snapshot().map((s) => s.spec.id)).toEqual(['b']);
    expect(() => r.client('a')).toThrow(/unknown engine/);
    expect(clientA.pool.closed).toBe(true);
    expect(servedModels(r.snapshot())).toEqual(['qwen']);
    expect(() => r.release('a', NO_LOAD)).not.toThrow();

    await expect(r.setEngines([spec('b', b), spec('b', a)])).rejects.toThrow('duplicate engine id "b"');
  });

  it('keeps health across a spec change at the same url, and re-probes when the url changes', async () => {
    const a = await fake();
    const moved = await fake({ healthStatus: 503 });
    const { registry: r } = registry([spec('a', a)], { healthIntervalMs: 60_000, scrapeIntervalMs: 60_000 });
    await r.start();
    const before = r.client('a');

    await r.setEngines([spec('a', a, ['llama', 'llama-lora'], { pool: 'h100' })]);
    expect(byId(r, 'a')).toMatchObject({ healthy: true, spec: { models: ['llama', 'llama-lora'], labels: { pool: 'h100' } } });
    expect(r.client('a')).not.toBe(before);
    expect(r.client('a').spec.labels).toEqual({ pool: 'h100' });
    expect(before.pool.closed).toBe(true);

    await r.setEngines([spec('a', moved)]);
    expect(byId(r, 'a')?.healthy).toBe(false);
    expect(moved.state.healthRequests).toBe(1);
  });

  it('keeps counting requests still running when an engine moves to a new url', async () => {
    const a = await fake();
    const moved = await fake();
    const { registry: r } = registry([spec('a', a)], { healthIntervalMs: 60_000, scrapeIntervalMs: 60_000 });
    await r.start();
    const load = (prefillTokens: number) => ({ prefillTokens, kvTokens: prefillTokens + 50, outputTokens: 100 });
    r.acquire('a', load(300));
    r.acquire('a', load(200));
    await r.setEngines([spec('a', moved)]);
    expect(byId(r, 'a')).toMatchObject({ inFlight: 2, pendingPrefillTokens: 500, inFlightKvTokens: 600, inFlightOutputTokens: 200 });
    r.acquire('a', load(100));
    r.prefillDone('a', load(300));
    r.release('a', load(300));
    expect(byId(r, 'a')).toMatchObject({ inFlight: 2, pendingPrefillTokens: 300, inFlightKvTokens: 400, inFlightOutputTokens: 200 });
  });

  it('serves the models of healthy engines only', async () => {
    const a = await fake();
    const b = await fake({ healthStatus: 503 });
    const { registry: r } = registry([spec('a', a, ['qwen', 'llama']), spec('b', b, ['mistral'])], {
      healthIntervalMs: 60_000,
    });
    await r.start();
    expect(servedModels(r.snapshot())).toEqual(['llama', 'qwen']);
  });

  it('stops probing and closes every client on stop()', async () => {
    const e = await fake();
    const { registry: r } = registry([spec('e', e)]);
    await r.start();
    await r.stop();
    expect(r.client('e').pool.closed).toBe(true);
    const probes = e.state.healthRequests;
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(e.state.healthRequests).toBe(probes);
    await expect(r.setEngines([])).rejects.toThrow(/stopped/);
  });

  it('validates its options', () => {
    expect(() => registry([], { healthIntervalMs: 0 })).toThrow(/healthIntervalMs must be a positive number/);
    expect(() => registry([], { failureThreshold: 1.5 })).toThrow(/failureThreshold must be a positive integer/);
  });
});
