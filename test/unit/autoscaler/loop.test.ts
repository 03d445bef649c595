import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { APA_DEFAULTS } from '../../../autoscaler/apa.js';
import { Autoscaler, toSample, type AutoscalerLogger, type ScalingTarget } from '../../../autoscaler/autoscaler.js';
import { KPA_DEFAULTS, resolveKpaOptions } from '../../../autoscaler/kpa.js';
import { createAutoscalerServer, type AutoscalerServer } from '../../../autoscaler/server.js';
import { MetricSourceError } from '../../../autoscaler/sources/source.js';
import { avg, FakeActuator, FakeClock, FakeSource } from './fakes.js';

function target(over: Partial<ScalingTarget> & Pick<ScalingTarget, 'source' | 'actuator'>): ScalingTarget {
  return {
    name: 'llama',
    metric: 'kv_cache_usage',
    targetValue: 0.6,
    minReplicas: 1,
    maxReplicas: 10,
    algorithm: { kind: 'kpa', options: KPA_DEFAULTS },
    ...over,
  };
}

function collectingLogger(): AutoscalerLogger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (_d, m) => lines.push(`info ${m}`), warn: (_d, m) => lines.push(`warn ${m}`) };
}

let autoscaler: Autoscaler | undefined;
let server: AutoscalerServer | undefined;

afterEach(async () => {
  await server?.close();
  await autoscaler?.close();
  server = autoscaler = undefined;
});

/** Ticks `n` times, 2 s apart. */
async function ticks(a: Autoscaler, clock: FakeClock, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    clock.advance(2_000);
    await a.tick();
  }
}

describe('toSample', () => {
  it.each([
    ['an average over the engines that answered', avg(0.5, 2), 3, { value: 0.5, replicas: 2 }],
    ["an average with no count: over the actuator's replicas", avg(0.5), 3, { value: 0.5, replicas: 3 }],
    ["a sum: spread over the actuator's replicas", { basis: 'sum', value: 1.5, detail: '' }, 3, { value: 0.5, replicas: 3 }],
    ['a sum with zero replicas: over one', { basis: 'sum', value: 1.5, detail: '' }, 0, { value: 1.5, replicas: 1 }],
  ] as const)('%s', (_name, reading, current, sample) => {
    expect(toSample(reading, current, 7)).toEqual({ at: 7, ...sample });
  });
});

describe('the loop, with a fake actuator and clock', () => {
  it('samples, decides, and scales through the actuator', async () => {
    const clock = new FakeClock();
    const actuator = new FakeActuator(1);
    const source = new FakeSource(() => avg(0.5 * (2 / actuator.replicas), actuator.replicas)); // load 1.0 in all
    autoscaler = new Autoscaler([target({ source, actuator, minReplicas: 1 })], { now: clock.now });
    const [first] = await autoscaler.tick();
    // Load 1.0 over a 0.6 target: 2 replicas. From 1, that is panic (2 / 1 >= 2) and a scale-up.
    expect(first).toMatchObject({ target: 'llama', reason: 'scale_up', current: 1, desired: 2, scaled: true });
    expect(first!.decision).toMatchObject({ panicking: true, recommended: 2 });
    expect(actuator.calls).toEqual([['llama', 2]]);
    await ticks(autoscaler, clock, 10);
    expect(actuator.calls).toEqual([['llama', 2]]);
    expect(actuator.replicas).toBe(2);
    const last = autoscaler.explain().targets[0]!.last!;
    expect(last).toMatchObject({ reason: 'steady', current: 2, desired: 2, scaled: false });
  });

  it('makes no decision on no data, and keeps the replicas', async () => {
    const clock = new FakeClock();
    const actuator = new FakeActuator(4);
    const source = new FakeSource(() => {
      throw new MetricSourceError('no_data', 'prometheus: the query returned no series');
    });
    const log = collectingLogger();
    autoscaler = new Autoscaler([target({ source, actuator })], { now: clock.now, logger: log });
    await ticks(autoscaler, clock, 5);
    expect(actuator.calls).toEqual([]);
    const t = autoscaler.explain().targets[0]!;
    expect(t.last).toMatchObject({ reason: 'no_data', current: 4, desired: undefined, error: 'prometheus: the query returned no series' });
    expect(t.summary).toBe('target llama: no data (prometheus: the query returned no series); staying at 4 replicas');
    const metrics = await autoscaler.registry.metrics();
    expect(metrics).toContain('switchyard_autoscaler_decisions_total{target="llama",reason="no_data"} 5');
    expect(metrics).not.toContain('switchyard_autoscaler_errors_total{target="llama",stage="source"}');
    expect(metrics).toContain('switchyard_autoscaler_desired_replicas{target="llama"} 4');
    // Logged once, not every tick.
    expect(log.lines).toEqual(['warn autoscaler: prometheus: the query returned no series']);
  });

  it('counts source and actuator failures, and retries a failed scale on the next tick', async () => {
    const clock = new FakeClock();
    const actuator = new FakeActuator(2);
    let fail = true;
    const source = new FakeSource(() => {
      if (fail) throw new MetricSourceError('unreachable', 'prometheus http://prom:9090: ECONNREFUSED');
      return avg(0.9, 2);
    });
    autoscaler = new Autoscaler([target({ source, actuator })], { now: clock.now });
    await ticks(autoscaler, clock, 2);
    expect(autoscaler.explain().targets[0]!.last).toMatchObject({ reason: 'source_error', desired: undefined });

    fail = false;
    actuator.failScale = new Error('deployments.apps "llama" is forbidden');
    await ticks(autoscaler, clock, 1);
    const failed = autoscaler.explain().targets[0]!.last!;
    expect(failed).toMatchObject({ reason: 'scale_up', current: 2, desired: 3, scaled: false, error: 'scale to 3 failed (fake): deployments.apps "llama" is forbidden' });
    expect(autoscaler.explain().targets[0]!.summary).toMatch(/-> 2 replicas -> 3 \(scale up\); scale to 3 failed/);

    actuator.failScale = undefined;
    await ticks(autoscaler, clock, 1);
    expect(actuator.replicas).toBe(3);

    actuator.failCurrent = new Error('connection refused');
    await ticks(autoscaler, clock, 1);
    expect(autoscaler.explain().targets[0]!.summary).toBe('target llama: cannot read current replicas (fake): connection refused; no decision');

    const metrics = await autoscaler.registry.metrics();
    expect(metrics).toContain('switchyard_autoscaler_errors_total{target="llama",stage="source"} 2');
    expect(metrics).toContain('switchyard_autoscaler_errors_total{target="llama",stage="scale"} 1');
    expect(metrics).toContain('switchyard_autoscaler_errors_total{target="llama",stage="current"} 1');
    expect(metrics).toContain('switchyard_autoscaler_decisions_total{target="llama",reason="source_error"} 2');
    expect(metrics).toContain('switchyard_autoscaler_decisions_total{target="llama",reason="actuator_error"} 1');
  });

  it('scales down only after the delay, and the window forgets old samples', async () => {
    const clock = new FakeClock();
    const actuator = new FakeActuator(1);
    let load = 3; // in replicas' worth at target 1
    const source = new FakeSource(() => avg(load / actuator.replicas, actuator.replicas));
    autoscaler = new Autoscaler([target({ source, actuator, targetValue: 1, metric: 'waiting_requests', algorithm: { kind: 'kpa', options: resolveKpaOptions({ scaleDownDelayMs: 20_000 }) } })], {
      now: clock.now,
    });
    await ticks(autoscaler, clock, 40); // 80 s: scaled to 3, panic over
    expect(actuator.replicas).toBe(3);
    load = 1;
    const t0 = clock.t;
    while (actuator.replicas === 3 && clock.t - t0 < 200_000) await ticks(autoscaler, clock, 1);
    // The stable window must first fall under 2 replicas' worth (~20 s of the 60 s), then the 20 s delay.
    expect(clock.t - t0).toBeGreaterThanOrEqual(40_000);
    await ticks(autoscaler, clock, 60);
    expect(actuator.replicas).toBe(1);
  });

  it('keeps the last N decisions per target, newest first, and the last change', async () => {
    const clock = new FakeClock();
    const actuator = new FakeActuator(1);
    const source = new FakeSource(() => avg(1.2 / actuator.replicas, actuator.replicas));
    autoscaler = new Autoscaler([target({ source, actuator })], { now: clock.now, decisionHistory: 5 });
    await ticks(autoscaler, clock, 12);
    const t = autoscaler.explain().targets[0]!;
    expect(t.decisions).toHaveLength(5);
    expect(t.decisions[0]!.at).toBe(clock.t);
    expect(t.decisions[4]!.at).toBe(clock.t - 8_000);
    expect(t.lastChange).toMatchObject({ current: 1, desired: 2, reason: 'scale_up' });
  });

  it('runs targets side by side, each with its own algorithm', async () => {
    const clock = new FakeClock();
    const a1 = new FakeActuator(2);
    const a2 = new FakeActuator(2);
    autoscaler = new Autoscaler(
      [
        target({ name: 'kpa-one', source: new FakeSource(() => avg(0.63, 2)), actuator: a1 }),
        target({ name: 'apa-one', source: new FakeSource(() => avg(0.63, 2)), actuator: a2, algorithm: { kind: 'apa', options: APA_DEFAULTS } }),
      ],
      { now: clock.now },
    );
    const records = await autoscaler.tick();
    // 5 % over target: KPA's ceil adds a replica; APA's +10 % band does not.
    expect(records.map((r) => [r.target, r.reason, r.desired])).toEqual([
      ['kpa-one', 'scale_up', 3],
      ['apa-one', 'within_tolerance', 2],
    ]);
  });

  it('does not start a target\'s tick while its previous one still runs', async () => {
    const actuator = new FakeActuator(1);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const source = new FakeSource(() => avg(0.1, 1));
    source.read = async () => {
      source.reads++;
      await gate;
      return avg(0.1, 1);
    };
    autoscaler = new Autoscaler([target({ source, actuator })]);
    const first = autoscaler.tick();
    const second = autoscaler.tick();
    release();
    const [[a], [b]] = await Promise.all([first, second]);
    expect(a).toBe(b);
    expect(source.reads).toBe(1);
  });

  it('ticks on its own timer until stopped; close() closes the sources and actuators', async () => {
    const actuator = new FakeActuator(1);
    const source = new FakeSource(() => avg(0.1, 1));
    autoscaler = new Autoscaler([target({ source, actuator })], { intervalMs: 10 });
    autoscaler.start();
    await new Promise((r) => setTimeout(r, 100));
    await autoscaler.stop();
    const reads = source.reads;
    expect(reads).toBeGreaterThanOrEqual(3);
    await new Promise((r) => setTimeout(r, 50));
    expect(source.reads).toBe(reads);
    await autoscaler.close();
    expect(source.closed && actuator.closed).toBe(true);
  });

  it('rejects duplicate targets and bad bounds', () => {
    const mk = () => ({ source: new FakeSource(() => avg(0)), actuator: new FakeActuator(1) });
    expect(() => new Autoscaler([target(mk()), target(mk())])).toThrow(/duplicate target "llama"/);
    expect(() => new Autoscaler([target({ ...mk(), minReplicas: 5, maxReplicas: 2 })])).toThrow(/minReplicas <= maxReplicas/);
  });
});

describe('/explain and /metrics', () => {
  /** 3 replicas that do not change (the actuator accepts and does nothing), KV usage 0.82 each for a minute. */
  async function stuckAt3(): Promise<{ clock: FakeClock; actuator: FakeActuator }> {
    const clock = new FakeClock();
    const actuator = new FakeActuator(3);
    actuator.adopt = false;
    let value = 0.6;
    const source = new FakeSource(() => avg(value, 3));
    autoscaler = new Autoscaler([target({ source, actuator })], { now: clock.now });
    await ticks(autoscaler, clock, 35); // steady at 0.6; the start-up panic ends after 60 s
    value = 0.82;
    await ticks(autoscaler, clock, 30); // the stable window holds only 0.82 now
    return { clock, actuator };
  }

  it('says the last decision in words', async () => {
    await stuckAt3();
    expect(autoscaler!.explain().targets[0]!.summary).toBe(
      'target llama: kv_cache_usage 0.82 per replica against target 0.6 over the 60 s stable window -> 3 replicas -> 5 (scale up)',
    );
  });

  it('serves /explain as JSON, as text on request, and /metrics with the decision series', async () => {
    await stuckAt3();
    server = createAutoscalerServer(autoscaler!, { logLevel: 'silent' });
    const url = await server.listen();

    const json = await request(`${url}/explain`);
    expect(json.headers['content-type']).toMatch(/application\/json/);
    const body = (await json.body.json()) as { intervalMs: number; targets: { name: string; summary: string; last: { decision: { window: string; perReplica: number }; reading: { detail: string } }; decisions: unknown[] }[] };
    expect(body.intervalMs).toBe(2_000);
    expect(body.targets[0]!.name).toBe('llama');
    expect(body.targets[0]!.summary).toMatch(/^target llama: kv_cache_usage 0.82 per replica/);
    expect(body.targets[0]!.last.decision.window).toBe('stable');
    expect(body.targets[0]!.last.decision.perReplica).toBeCloseTo(0.82);
    expect(body.targets[0]!.last.reading.detail).toBe('fake 0.82');
    expect(body.targets[0]!.decisions).toHaveLength(65);

    for (const res of [await request(`${url}/explain?format=text`), await request(`${url}/explain`, { headers: { accept: 'text/plain' } })]) {
      expect(res.headers['content-type']).toMatch(/text\/plain/);
      const text = await res.body.text();
      expect(text.split('\n')[0]).toBe('target llama: kv_cache_usage 0.82 per replica against target 0.6 over the 60 s stable window -> 3 replicas -> 5 (scale up)');
      expect(text).toContain('target llama: recent changes (newest first)');
      expect(text).toMatch(/ {2}\S+Z {2}3 -> 5 {2}scale_up {2}kv_cache_usage 0.82 per replica/);
    }

    const metrics = await (await request(`${url}/metrics`)).body.text();
    expect(metrics).toContain('switchyard_autoscaler_desired_replicas{target="llama"} 5');
    expect(metrics).toContain('switchyard_autoscaler_current_replicas{target="llama"} 3');
    expect(metrics).toContain('switchyard_autoscaler_metric_value{target="llama"} 0.82');
    expect(metrics).toContain('switchyard_autoscaler_target_value{target="llama"} 0.6');
    expect(metrics).toContain('switchyard_autoscaler_panic{target="llama"} 0');
    expect(metrics).toMatch(/switchyard_autoscaler_decisions_total\{target="llama",reason="scale_up"\} \d+/);
    expect(metrics).toMatch(/switchyard_autoscaler_decisions_total\{target="llama",reason="steady"\} \d+/);
    expect(metrics).toContain('# TYPE switchyard_autoscaler_decisions_total counter');

    expect(await (await request(`${url}/healthz`)).body.json()).toEqual({ status: 'ok' });
  });

  it('words for the other outcomes', async () => {
    const clock = new FakeClock();
    const mk = (name: string, replicas: number, value: number, over: Partial<ScalingTarget> = {}) =>
      target({ name, source: new FakeSource(() => avg(value, replicas)), actuator: new FakeActuator(replicas), ...over });
    autoscaler = new Autoscaler(
      [
        mk('burst', 2, 3, { targetValue: 1, metric: 'waiting_requests' }),
        mk('band', 4, 0.63, { algorithm: { kind: 'apa', options: APA_DEFAULTS } }),
        mk('capped', 8, 0.9, { maxReplicas: 8 }),
        mk('quiet', 1, 0.1, { minReplicas: 1 }),
      ],
      { now: clock.now },
    );
    expect(autoscaler.explain().targets[0]!.summary).toBe('target burst: no decision yet');
    await autoscaler.tick();
    const s = autoscaler.explain().targets.map((t) => t.summary);
    expect(s[0]).toBe('target burst: waiting_requests 3 per replica against target 1 over the 60 s stable window (panic mode, from this tick) -> 2 replicas -> 6 (scale up)');
    expect(s[1]).toBe('target band: kv_cache_usage 0.63 per replica against target 0.6 over the 60 s window, 5 % above target -> 4 replicas -> 4 (within tolerance; the load asks for 5)');
    expect(s[2]).toBe('target capped: kv_cache_usage 0.9 per replica against target 0.6 over the 60 s stable window (panic mode, from this tick) -> 8 replicas -> 8 (at maxReplicas; the load asks for 12)');
    expect(s[3]).toBe('target quiet: kv_cache_usage 0.1 per replica against target 0.6 over the 60 s stable window -> 1 replica -> 1 (steady)');
  });

  it('names the panic window when a burst decides', async () => {
    const clock = new FakeClock();
    const actuator = new FakeActuator(2);
    let value = 1;
    autoscaler = new Autoscaler([target({ name: 'burst', metric: 'waiting_requests', targetValue: 1, source: new FakeSource(() => avg(value, 2)), actuator })], { now: clock.now });
    await ticks(autoscaler, clock, 35);
    value = 3;
    await ticks(autoscaler, clock, 1);
    expect(autoscaler.explain().targets[0]!.summary).toBe(
      'target burst: waiting_requests 1.667 per replica against target 1 over the 6 s panic window (panic mode, from this tick) -> 2 replicas -> 4 (scale up)',
    );
    await ticks(autoscaler, clock, 5);
    expect(autoscaler.explain().targets[0]!.summary).toMatch(/over the 6 s panic window \(panic mode for 10 s\) -> 6 replicas -> 6 \(steady\)$/);
  });
});
