import { afterEach, describe, expect, it } from 'vitest';
import { EngineRegistry } from '../../../router/engines/registry.js';
import { startFakeEngine, vllmMetrics, waitFor, type FakeEngine } from './fake-engine.js';

const engines: FakeEngine[] = [];
const registries: EngineRegistry[] = [];

afterEach(async () => {
  await Promise.all(registries.splice(0).map((r) => r.stop()));
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

/** vLLM metrics with Prometheus' process start time, as prometheus_client's process collector serves it. */
const withStart = (startedAt: number) => `${vllmMetrics(0, 0, 0)}# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ${startedAt}\n`;

/** A registry over one fake engine, recording restarts and health changes in the order they were called. */
async function watched(init: Parameters<typeof startFakeEngine>[0] = {}) {
  const engine = await startFakeEngine(init);
  engines.push(engine);
  const calls: string[] = [];
  const restarts: string[] = [];
  const registry = new EngineRegistry([{ id: 'e', url: engine.url, kind: 'vllm', models: ['llama'], labels: {} }], {
    healthIntervalMs: 20,
    healthTimeoutMs: 200,
    scrapeIntervalMs: 20,
    scrapeTimeoutMs: 200,
    onRestart: (id, why) => {
      restarts.push(`${id}:${why}`);
      calls.push(`restart:${why}`);
    },
    onHealthChange: (_id, healthy) => calls.push(healthy ? 'healthy' : 'unhealthy'),
  });
  registries.push(registry);
  const healthy = () => registry.snapshot()[0]!.healthy;
  /** Probes fail until the engine is marked unhealthy, then `during` runs, then probes pass until it is back. */
  const outage = async (during: () => void = () => {}) => {
    engine.state.healthStatus = 503;
    await waitFor('the engine to turn unhealthy', () => !healthy());
    during();
    engine.state.healthStatus = 200;
    await waitFor('the engine to be re-admitted', healthy);
  };
  /** Waits until two more scrapes have been answered, so anything they would have concluded has happened. */
  const twoScrapes = async () => {
    const seen = engine.state.metricsRequests;
    await waitFor('two more scrapes', () => engine.state.metricsRequests >= seen + 2);
  };
  return { engine, registry, calls, restarts, healthy, outage, twoScrapes };
}

describe('EngineRegistry restart detection', () => {
  it('calls a probed outage of an engine without a start time a restart, before admitting it again', async () => {
    const w = await watched();
    await w.registry.start();
    await w.outage();
    expect(w.restarts).toEqual(['e:health']);
    expect(w.calls).toEqual(['healthy', 'unhealthy', 'restart:health', 'healthy']);
  });

  it('does not call the first admission, or a single failed probe, a restart', async () => {
    const w = await watched({ healthStatus: 503 });
    await w.registry.start();
    w.engine.state.healthStatus = 200;
    await waitFor('the first admission', w.healthy);
    w.engine.state.healthStatus = 503;
    const probes = w.engine.state.healthRequests;
    await waitFor('one failed probe', () => w.engine.state.healthRequests > probes);
    w.engine.state.healthStatus = 200;
    await w.twoScrapes();
    expect(w.healthy()).toBe(true);
    expect(w.restarts).toEqual([]);
  });

  it('does not call a passive ejection a restart, unless the probes then fail too', async () => {
    const w = await watched();
    await w.registry.start();
    for (let i = 0; i < 3; i++) w.registry.reportFailure('e');
    expect(w.healthy()).toBe(false);
    await waitFor('the re-admission', w.healthy);
    await w.twoScrapes();
    expect(w.restarts).toEqual([]);

    for (let i = 0; i < 3; i++) w.registry.reportFailure('e');
    w.engine.state.healthStatus = 503;
    const probes = w.engine.state.healthRequests;
    await waitFor('two failed probes', () => w.engine.state.healthRequests >= probes + 3);
    w.engine.state.healthStatus = 200;
    await waitFor('the re-admission', w.healthy);
    expect(w.restarts).toEqual(['e:health']);
  });

  it('notices a new process start time at a scrape, even when no probe failed, once', async () => {
    const w = await watched({ metricsText: withStart(1_747_502_632.83) });
    await w.registry.start();
    expect(w.registry.snapshot()[0]!.load?.startedAt).toBe(1_747_502_632.83);
    w.engine.state.metricsText = withStart(1_747_503_000.01);
    await waitFor('the restart', () => w.restarts.length > 0);
    await w.twoScrapes();
    expect(w.restarts).toEqual(['e:start_time']);
    expect(w.healthy()).toBe(true);
  });

  it('trusts the start time over the probes: an unreachable engine that comes back unchanged did not restart', async () => {
    const w = await watched({ metricsText: withStart(100.5) });
    await w.registry.start();
    await w.outage();
    await w.twoScrapes();
    expect(w.restarts).toEqual([]);

    await w.outage(() => (w.engine.state.metricsText = withStart(200.25)));
    await waitFor('the restart', () => w.restarts.length > 0);
    await w.twoScrapes();
    expect(w.restarts).toEqual(['e:start_time']);
  });

  it('calls an outage a restart when the engine comes back without the start time it had', async () => {
    const w = await watched({ metricsText: withStart(100.5) });
    await w.registry.start();
    await w.outage(() => (w.engine.state.metricsText = vllmMetrics(0, 0, 0)));
    await waitFor('the restart', () => w.restarts.length > 0);
    await w.twoScrapes();
    expect(w.restarts).toEqual(['e:health']);
  });
});
