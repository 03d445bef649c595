import { describe, expect, it } from 'vitest';
import type { DecisionReason, Limit, Sample } from '../../../autoscaler/algorithm.js';
import { APA_DEFAULTS, APA_INITIAL_STATE, apa, resolveApaOptions, type ApaOptions, type ApaState } from '../../../autoscaler/apa.js';
import { changes, firstAtLeast, noise, simulate, steps } from './simulate.js';

const NOW = 600_000;

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
  state?: ApaState;
  options?: Partial<ApaOptions>;
  min?: number;
  max?: number;
  desired: number;
  reason: DecisionReason;
  limitedBy?: Limit[];
}

const NO_DELAY = { scaleDownDelayMs: 0 };

const rows: Row[] = [
  { name: 'no sample in the window: no decision', samples: [], current: 4, target: 10, desired: 4, reason: 'no_data' },
  { name: 'on target: steady', samples: flat(10, 4), current: 4, target: 10, desired: 4, reason: 'steady' },
  { name: '+5 %: inside the +10 % band though ceil would add one', samples: flat(10.5, 4), current: 4, target: 10, desired: 4, reason: 'within_tolerance', limitedBy: ['tolerance'] },
  { name: '+10 % exactly: still inside (strictly above scales)', samples: flat(11, 4), current: 4, target: 10, desired: 4, reason: 'within_tolerance' },
  { name: '+25 %: ceil(current x ratio)', samples: flat(12.5, 4), current: 4, target: 10, desired: 5, reason: 'scale_up' },
  { name: '-15 %: inside the -20 % band though ceil would remove one', samples: flat(8.5, 10), current: 10, target: 10, options: NO_DELAY, desired: 10, reason: 'within_tolerance' },
  { name: '-50 %: ceil(current x ratio)', samples: flat(5, 4), current: 4, target: 10, options: NO_DELAY, desired: 2, reason: 'scale_down' },
  { name: 'x5: at most doubled (max scale-up rate 2)', samples: flat(50, 2), current: 2, target: 10, desired: 4, reason: 'scale_up', limitedBy: ['max_scale_up_rate'] },
  { name: 'x0.05: at most halved (max scale-down rate 2)', samples: flat(0.5, 8), current: 8, target: 10, options: NO_DELAY, desired: 4, reason: 'scale_down', limitedBy: ['max_scale_down_rate'] },
  { name: 'wider band from options', samples: flat(14, 4), current: 4, target: 10, options: { upTolerance: 0.5 }, desired: 4, reason: 'within_tolerance' },
  { name: 'maxReplicas caps', samples: flat(20, 6), current: 6, target: 10, max: 8, desired: 8, reason: 'scale_up', limitedBy: ['max_replicas'] },
  { name: 'at maxReplicas', samples: flat(20, 8), current: 8, target: 10, max: 8, desired: 8, reason: 'at_max' },
  { name: 'at minReplicas', samples: flat(1, 2), current: 2, target: 10, min: 2, options: NO_DELAY, desired: 2, reason: 'at_min' },
  {
    name: 'scale-down delay: a higher recommendation inside the delay holds',
    samples: flat(5, 4),
    current: 4,
    target: 10,
    state: { recent: [{ at: NOW - 100_000, desired: 4 }] },
    desired: 4,
    reason: 'scale_down_delayed',
    limitedBy: ['scale_down_delay'],
  },
  { name: 'scale-down delay: expired', samples: flat(5, 4), current: 4, target: 10, state: { recent: [{ at: NOW - 300_000, desired: 4 }] }, desired: 2, reason: 'scale_down' },
  {
    name: 'the load model: per replica is the window load over the current replicas',
    // 60 s at 2 replicas x 15 = load 30; now 3 replicas: 10 per replica, on target. Averaging per-replica values
    // (15) instead would scale up again.
    samples: flat(15, 2),
    current: 3,
    target: 10,
    desired: 3,
    reason: 'steady',
  },
];

describe('apa: one decision', () => {
  it.each(rows)('$name', (row) => {
    const d = apa(
      { samples: row.samples, now: NOW, current: row.current, target: row.target, minReplicas: row.min ?? 1, maxReplicas: row.max ?? 100, state: row.state ?? APA_INITIAL_STATE },
      resolveApaOptions(row.options),
    );
    expect({ desired: d.desired, reason: d.reason }).toEqual({ desired: row.desired, reason: row.reason });
    if (row.limitedBy !== undefined) expect(d.limitedBy).toEqual(row.limitedBy);
  });

  it('reports the ratio to the target', () => {
    const d = apa({ samples: flat(0.82, 3), now: NOW, current: 3, target: 0.6, minReplicas: 1, maxReplicas: 10, state: APA_INITIAL_STATE });
    expect(d.ratio).toBeCloseTo(0.82 / 0.6);
    expect(d.perReplica).toBeCloseTo(0.82);
    expect(d).toMatchObject({ window: 'apa', windowMs: 60_000, samples: 30, recommended: 5, desired: 5, reason: 'scale_up' });
  });
});

describe('apa: options', () => {
  it("defaults to AIBrix's APA values, with a 5 min scale-down delay", () => {
    expect(resolveApaOptions()).toEqual(APA_DEFAULTS);
    expect(APA_DEFAULTS).toEqual({ windowMs: 60_000, upTolerance: 0.1, downTolerance: 0.2, maxScaleUpRate: 2, maxScaleDownRate: 2, scaleDownDelayMs: 300_000 });
  });

  it.each([
    [{ windowMs: 0 }, /windowMs/],
    [{ upTolerance: -0.1 }, /upTolerance/],
    [{ downTolerance: 1 }, /downTolerance/],
    [{ maxScaleUpRate: 1 }, /maxScaleUpRate/],
  ] as [Partial<ApaOptions>, RegExp][])('rejects %o', (options, message) => {
    expect(() => resolveApaOptions(options)).toThrow(message);
  });
});

describe('apa: over many ticks (replicas ready at once)', () => {
  const MIN = 60_000;

  it('steady load: no change', () => {
    const run = simulate({ algorithm: 'apa', demand: () => 40, start: 4, target: 10, ticks: 300, warmupMs: MIN });
    expect(changes(run)).toBe(0);
  });

  it('spike: up by at most 2x per decision until the load is covered, never past it', () => {
    const spikeAt = 2 * MIN;
    const run = simulate({ algorithm: 'apa', demand: (t) => (t < spikeAt ? 20 : 160), start: 2, target: 10, ticks: 300, warmupMs: MIN });
    const s = steps(run);
    expect(s[0]).toBe(2);
    expect(s[s.length - 1]).toBe(16);
    for (let i = 1; i < s.length; i++) expect(s[i]!).toBeLessThanOrEqual(2 * s[i - 1]!);
    expect(Math.max(...run.map((k) => k.after))).toBe(16);
    // No panic window: the 60 s mean has to absorb the burst first; still within a window.
    expect(firstAtLeast(run, 16)! - spikeAt).toBeLessThanOrEqual(60_000);
  });

  it('slow ramp: stepwise up, never down', () => {
    const demand = (t: number) => Math.min(80, 20 + (60 * t) / (10 * MIN));
    const run = simulate({ algorithm: 'apa', demand, start: 2, target: 10, ticks: 400, warmupMs: MIN });
    const s = steps(run);
    for (let i = 1; i < s.length; i++) expect(s[i]!).toBeGreaterThan(s[i - 1]!);
    expect(s[s.length - 1]).toBe(8);
  });

  it('drop: held for the 5 min delay, then at most halved per decision', () => {
    const dropAt = 2 * MIN;
    const run = simulate({ algorithm: 'apa', demand: (t) => (t < dropAt ? 80 : 5), start: 8, target: 10, ticks: 600, warmupMs: MIN });
    const firstDown = run.find((k) => k.after < k.before)!;
    expect(firstDown.t - dropAt).toBeGreaterThanOrEqual(300_000);
    const s = steps(run);
    expect(s[s.length - 1]).toBe(1);
    for (let i = 1; i < s.length; i++) expect(s[i]!).toBeGreaterThanOrEqual(Math.floor(s[i - 1]! / 2));
  });

  it.each([1, 2, 3, 4, 5, 6, 7, 8])('noise around the target (seed %i): no change in an hour', (seed) => {
    // 40 +- 6 over 4 replicas: 10 +- 15 % per replica; the 60 s mean stays well inside -20 %..+10 %.
    const jitter = noise(seed, 6);
    const run = simulate({ algorithm: 'apa', demand: (t) => 40 + jitter(t), start: 4, target: 10, ticks: 1800, warmupMs: MIN });
    expect(changes(run)).toBe(0);
  });

  it('noise with a 2 s window (no averaging): the band alone still keeps it to rare changes', () => {
    const jitter = noise(3, 6);
    const run = simulate({ algorithm: 'apa', apa: { windowMs: 2_000 }, demand: (t) => 40 + jitter(t), start: 4, target: 10, ticks: 1800, warmupMs: 2_000 });
    // +15 % peaks cross +10 %: up to 5; at 5, 8 per replica is inside -20 %, so it stays there.
    expect(changes(run)).toBeLessThanOrEqual(1);
  });
});
