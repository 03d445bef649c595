import { describe, expect, it } from 'vitest';
import type { DecisionReason, Limit, Sample } from '../../../autoscaler/algorithm.js';
import { KPA_DEFAULTS, kpa, kpaInitialState, resolveKpaOptions, type KpaOptions, type KpaState } from '../../../autoscaler/kpa.js';
import { changes, firstAtLeast, noise, simulate, steps } from './simulate.js';

const NOW = 600_000;
const CALM: KpaState = { panicSince: undefined, lastOverThresholdAt: undefined, maxPanicReplicas: 0, recent: [] };

/** Samples every 2 s over the last `spanMs`, each with per-replica `value` over `replicas`. */
function flat(value: number, replicas: number, spanMs = 60_000, now = NOW): Sample[] {
  const out: Sample[] = [];
  for (let t = now - spanMs + 2_000; t <= now; t += 2_000) out.push({ at: t, value, replicas });
  return out;
}

interface Row {
  name: string;
  samples: Sample[];
  current: number;
  target: number;
  state?: KpaState;
  options?: Partial<KpaOptions>;
  min?: number;
  max?: number;
  desired: number;
  reason: DecisionReason;
  limitedBy?: Limit[];
  panicking?: boolean;
}

// One decision each: the inputs in, the desired count and the reason out.
const rows: Row[] = [
  { name: 'no sample in the stable window: no decision', samples: [], current: 3, target: 10, desired: 3, reason: 'no_data' },
  { name: 'samples older than the stable window only: no decision', samples: flat(50, 3).map((s) => ({ ...s, at: s.at - 120_000 })), current: 3, target: 10, desired: 3, reason: 'no_data' },
  { name: 'load on target: steady', samples: flat(10, 3), current: 3, target: 10, desired: 3, reason: 'steady' },
  { name: 'KV usage exactly on target (0.6 x 3 / 0.6 is 3.0000000000000004 in floats): steady', samples: flat(0.6, 3), current: 3, target: 0.6, desired: 3, reason: 'steady' },
  { name: 'load 20 % over target: scale up by ceil', samples: flat(12, 3), current: 3, target: 10, desired: 4, reason: 'scale_up' },
  { name: 'load below target inside one replica: steady (ceil)', samples: flat(8, 3), current: 3, target: 10, desired: 3, reason: 'steady' },
  { name: 'load asks for fewer, no delay: scale down', samples: flat(4, 6), current: 6, target: 10, options: { scaleDownDelayMs: 0 }, desired: 3, reason: 'scale_down' },
  {
    name: 'scale-down rate 2: at most halved per decision',
    samples: flat(0.5, 8),
    current: 8,
    target: 10,
    options: { scaleDownDelayMs: 0 },
    desired: 4,
    reason: 'scale_down',
    limitedBy: ['max_scale_down_rate'],
  },
  {
    name: 'scale-up rate 2 (AIBrix default): at most doubled per decision',
    samples: flat(50, 2),
    current: 2,
    target: 10,
    options: { maxScaleUpRate: 2 },
    desired: 4,
    reason: 'scale_up',
    limitedBy: ['max_scale_up_rate'],
    panicking: true,
  },
  { name: 'maxReplicas caps a scale-up', samples: flat(30, 4), current: 4, target: 10, max: 8, desired: 8, reason: 'scale_up', limitedBy: ['max_replicas'] },
  { name: 'already at maxReplicas: at_max', samples: flat(30, 8), current: 8, target: 10, max: 8, desired: 8, reason: 'at_max', limitedBy: ['max_replicas'] },
  { name: 'no load at minReplicas: at_min', samples: flat(0, 2), current: 2, target: 10, min: 2, options: { scaleDownDelayMs: 0 }, desired: 2, reason: 'at_min' },
  {
    name: 'panic window twice the replicas: panic starts and the panic window decides',
    // The stable window has seen 54 s of 10 per replica and 6 s of 40.
    samples: [...flat(10, 2, 60_000).filter((s) => s.at <= NOW - 6_000), ...flat(40, 2, 6_000)],
    current: 2,
    target: 10,
    desired: 8,
    reason: 'scale_up',
    panicking: true,
  },
  {
    name: 'panicking: no scale-down below the panic high-water mark',
    samples: flat(5, 6),
    current: 6,
    target: 10,
    state: { panicSince: NOW - 20_000, lastOverThresholdAt: NOW - 20_000, maxPanicReplicas: 6, recent: [] },
    options: { scaleDownDelayMs: 0 },
    desired: 6,
    reason: 'panic_hold',
    limitedBy: ['panic'],
    panicking: true,
  },
  {
    name: 'panic ends a stable window after the threshold was last met, then scales down',
    samples: flat(5, 6),
    current: 6,
    target: 10,
    state: { panicSince: NOW - 90_000, lastOverThresholdAt: NOW - 61_000, maxPanicReplicas: 6, recent: [] },
    options: { scaleDownDelayMs: 0 },
    desired: 3,
    reason: 'scale_down',
    panicking: false,
  },
  {
    name: 'scale-down delay: a higher recommendation 30 s ago holds the replicas',
    samples: flat(5, 6),
    current: 6,
    target: 10,
    state: { ...CALM, recent: [{ at: NOW - 30_000, desired: 6 }] },
    options: { scaleDownDelayMs: 60_000 },
    desired: 6,
    reason: 'scale_down_delayed',
    limitedBy: ['scale_down_delay'],
  },
  {
    name: 'scale-down delay: recommendations older than the delay no longer count',
    samples: flat(5, 6),
    current: 6,
    target: 10,
    state: { ...CALM, recent: [{ at: NOW - 61_000, desired: 6 }] },
    options: { scaleDownDelayMs: 60_000 },
    desired: 3,
    reason: 'scale_down',
  },
  {
    name: 'scale-down delay: the highest recent recommendation is kept, not the current count',
    samples: flat(2, 8),
    current: 8,
    target: 10,
    state: { ...CALM, recent: [{ at: NOW - 50_000, desired: 6 }, { at: NOW - 20_000, desired: 3 }] },
    options: { scaleDownDelayMs: 60_000 },
    desired: 6,
    reason: 'scale_down',
    limitedBy: ['max_scale_down_rate', 'scale_down_delay'],
  },
  { name: 'scale-down delay never holds a scale-up back', samples: flat(20, 3), current: 3, target: 10, state: { ...CALM, recent: [{ at: NOW - 10_000, desired: 2 }] }, desired: 6, reason: 'scale_up' },
];

describe('kpa: one decision', () => {
  it.each(rows)('$name', (row) => {
    const d = kpa(
      { samples: row.samples, now: NOW, current: row.current, target: row.target, minReplicas: row.min ?? 1, maxReplicas: row.max ?? 100, state: row.state ?? CALM },
      resolveKpaOptions(row.options),
    );
    expect({ desired: d.desired, reason: d.reason }).toEqual({ desired: row.desired, reason: row.reason });
    if (row.limitedBy !== undefined) expect(d.limitedBy).toEqual(row.limitedBy);
    if (row.panicking !== undefined) expect(d.panicking).toBe(row.panicking);
  });

  it('is pure: the same inputs give the same decision, and the state object is not mutated', () => {
    const state: KpaState = { panicSince: undefined, lastOverThresholdAt: undefined, maxPanicReplicas: 0, recent: [{ at: NOW - 2_000, desired: 3 }] };
    const snapshot = JSON.parse(JSON.stringify(state));
    const input = { samples: flat(20, 3), now: NOW, current: 3, target: 10, minReplicas: 1, maxReplicas: 10, state };
    const a = kpa(input);
    const b = kpa(input);
    expect(a).toEqual(b);
    expect(state).toEqual(snapshot);
  });

  it('reports the load, the per-replica value and the window it used', () => {
    const d = kpa({ samples: flat(0.82, 3), now: NOW, current: 3, target: 0.6, minReplicas: 1, maxReplicas: 10, state: CALM });
    expect(d.window).toBe('stable');
    expect(d.windowMs).toBe(60_000);
    expect(d.samples).toBe(30);
    expect(d.load).toBeCloseTo(2.46);
    expect(d.perReplica).toBeCloseTo(0.82);
    expect(d.recommended).toBe(5);
    expect(d.desired).toBe(5);
  });

  it('starts in panic mode above one replica, as Knative does after a restart, and leaves it after a stable window', () => {
    expect(kpaInitialState(1, 0).panicSince).toBeUndefined();
    const state = kpaInitialState(6, NOW - 10_000);
    const held = kpa({ samples: flat(5, 6, 10_000), now: NOW, current: 6, target: 10, minReplicas: 1, maxReplicas: 10, state }, resolveKpaOptions({ scaleDownDelayMs: 0 }));
    expect(held).toMatchObject({ desired: 6, reason: 'panic_hold', panicking: true });
    const later = NOW + 52_000;
    const free = kpa({ samples: flat(5, 6, 60_000, later), now: later, current: 6, target: 10, minReplicas: 1, maxReplicas: 10, state: held.state }, resolveKpaOptions({ scaleDownDelayMs: 0 }));
    expect(free).toMatchObject({ desired: 3, reason: 'scale_down', panicking: false });
  });
});

describe('kpa: options', () => {
  it('defaults to Knative values except the scale-down delay', () => {
    expect(resolveKpaOptions()).toEqual(KPA_DEFAULTS);
    expect(KPA_DEFAULTS).toEqual({ stableWindowMs: 60_000, panicWindowMs: 6_000, panicThreshold: 2, maxScaleUpRate: 1000, maxScaleDownRate: 2, scaleDownDelayMs: 300_000 });
  });

  it('derives the panic window as 10 % of a configured stable window', () => {
    expect(resolveKpaOptions({ stableWindowMs: 120_000 }).panicWindowMs).toBe(12_000);
    expect(resolveKpaOptions({ stableWindowMs: 120_000, panicWindowMs: 4_000 }).panicWindowMs).toBe(4_000);
  });

  it.each([
    [{ panicWindowMs: 90_000 }, /panicWindowMs/],
    [{ panicThreshold: 1 }, /panicThreshold/],
    [{ maxScaleUpRate: 1 }, /maxScaleUpRate/],
    [{ maxScaleDownRate: 0.5 }, /maxScaleDownRate/],
    [{ scaleDownDelayMs: -1 }, /scaleDownDelayMs/],
    [{ stableWindowMs: 0 }, /stableWindowMs/],
  ] as [Partial<KpaOptions>, RegExp][])('rejects %o', (options, message) => {
    expect(() => resolveKpaOptions(options)).toThrow(message);
  });
});

describe('kpa: over many ticks (replicas ready at once)', () => {
  const MIN = 60_000;

  it('steady load: no change over 10 minutes', () => {
    for (const demand of [30, 25, 30.000001 - 0.000001]) {
      const run = simulate({ algorithm: 'kpa', demand: () => demand, start: 3, target: 10, ticks: 300 });
      expect(changes(run)).toBe(0);
    }
  });

  it('spike: panic mode and the replicas the burst needs within the 6 s panic window; the stable window alone takes far longer', () => {
    const spikeAt = 2 * MIN;
    const demand = (t: number) => (t < spikeAt ? 20 : 100);
    const run = simulate({ algorithm: 'kpa', demand, start: 2, target: 10, ticks: 150 });
    const reached = firstAtLeast(run, 10)!;
    expect(reached - spikeAt).toBeLessThanOrEqual(6_000);
    expect(run.find((k) => k.t === spikeAt)!.decision).toMatchObject({ panicking: true, window: 'panic' });
    // No overshoot: the load model sees the same total when replicas are added.
    expect(Math.max(...run.map((k) => k.after))).toBe(10);

    const noPanic = simulate({ algorithm: 'kpa', kpa: { panicThreshold: 1000 }, demand, start: 2, target: 10, ticks: 150 });
    expect(firstAtLeast(noPanic, 10)! - spikeAt).toBeGreaterThan(30_000);
  });

  it('panic lasts a stable window after the threshold was last met, with no scale-down; then the delay; then down', () => {
    const burst = [2 * MIN, 3 * MIN];
    const demand = (t: number) => (t >= burst[0]! && t < burst[1]! ? 100 : 20);
    const run = simulate({ algorithm: 'kpa', demand, start: 2, target: 10, ticks: 600, warmupMs: MIN });
    const panicking = (k: (typeof run)[number]) => (k.decision as { panicking: boolean }).panicking;
    const panicStart = run.find(panicking)!.t;
    expect(panicStart).toBe(burst[0]);
    // Over the threshold only at the first tick (then 5 replicas), so panic ends just over a stable window later.
    const panicEnd = run.find((k) => k.t > panicStart && !panicking(k))!.t;
    expect(panicEnd - panicStart).toBeGreaterThan(60_000);
    expect(panicEnd - panicStart).toBeLessThanOrEqual(64_000);
    expect(run.filter((k) => panicking(k) && k.after < k.before)).toEqual([]);
    const firstDown = run.find((k) => k.after < k.before)!;
    expect(firstDown.t - burst[1]!).toBeGreaterThanOrEqual(300_000 - 2_000);
    expect(run[run.length - 1]!.after).toBe(2);
  });

  it('slow ramp: one replica at a time, up only, never panicking once the start-up panic is over', () => {
    // 20 -> 60 over 10 minutes, then flat: 2 -> 6 replicas.
    const demand = (t: number) => Math.min(60, 20 + (40 * t) / (10 * MIN));
    const run = simulate({ algorithm: 'kpa', demand, start: 2, target: 10, ticks: 400 });
    expect(steps(run)).toEqual([2, 3, 4, 5, 6]);
    expect(run.filter((k) => k.t > 62_000 && (k.decision as { panicking: boolean }).panicking)).toEqual([]);
  });

  it('drop: nothing goes before the 5 min scale-down delay, then one step at a time down to what the load needs', () => {
    const dropAt = 2 * MIN;
    const demand = (t: number) => (t < dropAt ? 80 : 10);
    const run = simulate({ algorithm: 'kpa', demand, start: 8, target: 10, ticks: 600, warmupMs: MIN });
    const firstDown = run.find((k) => k.after < k.before)!;
    expect(firstDown.t - dropAt).toBeGreaterThanOrEqual(300_000);
    const s = steps(run);
    expect(s[0]).toBe(8);
    expect(s[s.length - 1]).toBe(1);
    for (let i = 1; i < s.length; i++) expect(s[i]!).toBeGreaterThanOrEqual(Math.floor(s[i - 1]! / 2));
  });

  it('drop to nothing with short windows and no delay: halved per tick by the scale-down rate', () => {
    const demand = (t: number) => (t < 20_000 ? 80 : 0);
    const run = simulate({ algorithm: 'kpa', kpa: { stableWindowMs: 2_000, panicWindowMs: 2_000, scaleDownDelayMs: 0 }, demand, start: 8, target: 10, ticks: 30, warmupMs: 2_000 });
    expect(steps(run)).toEqual([8, 4, 2, 1]);
  });

  const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];

  it.each(SEEDS)('noise around the target on a replica boundary (seed %i): at most one change in an hour', (seed) => {
    // 30 +- 5 over 3 replicas: 10 +- 17 % per replica against a target of 10.
    const jitter = noise(seed, 5);
    const run = simulate({ algorithm: 'kpa', demand: (t) => 30 + jitter(t), start: 3, target: 10, ticks: 1800, warmupMs: MIN });
    expect(changes(run)).toBeLessThanOrEqual(1);
  });

  it("the same noise with Knative's scale-down delay of 0 flaps (why the default is 5 min)", () => {
    const jitter = noise(1, 5);
    const run = simulate({ algorithm: 'kpa', kpa: { scaleDownDelayMs: 0 }, demand: (t) => 30 + jitter(t), start: 3, target: 10, ticks: 1800, warmupMs: MIN });
    expect(changes(run)).toBeGreaterThan(20);
  });

  it.each(SEEDS)('noise around a load inside the replicas (seed %i): no change in an hour', (seed) => {
    const jitter = noise(seed, 5);
    const run = simulate({ algorithm: 'kpa', demand: (t) => 27 + jitter(t), start: 3, target: 10, ticks: 1800, warmupMs: MIN });
    expect(changes(run)).toBe(0);
  });
});
