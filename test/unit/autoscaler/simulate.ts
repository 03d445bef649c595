import type { Sample } from '../../../autoscaler/algorithm.js';
import { apa, APA_INITIAL_STATE, resolveApaOptions, type ApaDecision, type ApaOptions, type ApaState } from '../../../autoscaler/apa.js';
import { kpa, kpaInitialState, resolveKpaOptions, type KpaDecision, type KpaOptions, type KpaState } from '../../../autoscaler/kpa.js';

/**
 * Runs an algorithm tick by tick against a demand curve, as the loop would with an actuator whose replicas are
 * ready at once: each tick samples demand(t) / replicas per replica over `replicas`, decides, and adopts the
 * decision. Returns the replicas after every tick.
 */
export interface SimOptions {
  readonly algorithm: 'kpa' | 'apa';
  readonly kpa?: Partial<KpaOptions>;
  readonly apa?: Partial<ApaOptions>;
  /** Total load over all replicas at time t (ms); per replica it is divided by the replica count. */
  readonly demand: (t: number) => number;
  readonly start: number;
  readonly target: number;
  readonly minReplicas?: number;
  readonly maxReplicas?: number;
  readonly ticks: number;
  readonly tickMs?: number;
  /**
   * Samples of demand(t) for t in [-warmupMs, 0) before the first decision, as if the loop had been running at
   * `start` replicas (and KPA not panicking). Default 0: a cold start, empty windows, KPA's initial state.
   */
  readonly warmupMs?: number;
}

export interface SimTick {
  readonly t: number;
  readonly before: number;
  readonly after: number;
  readonly decision: KpaDecision | ApaDecision;
}

export function simulate(o: SimOptions): SimTick[] {
  const tickMs = o.tickMs ?? 2_000;
  const kpaOptions = resolveKpaOptions(o.kpa);
  const apaOptions = resolveApaOptions(o.apa);
  let replicas = o.start;
  let samples: Sample[] = [];
  const warmupMs = o.warmupMs ?? 0;
  for (let t = -warmupMs; t < 0; t += tickMs) samples.push({ at: t, value: o.demand(t) / Math.max(1, replicas), replicas: Math.max(1, replicas) });
  let kState: KpaState = warmupMs > 0 ? { panicSince: undefined, lastOverThresholdAt: undefined, maxPanicReplicas: 0, recent: [] } : kpaInitialState(o.start, 0);
  let aState: ApaState = APA_INITIAL_STATE;
  const out: SimTick[] = [];
  for (let i = 0; i < o.ticks; i++) {
    const t = i * tickMs;
    samples.push({ at: t, value: o.demand(t) / Math.max(1, replicas), replicas: Math.max(1, replicas) });
    samples = samples.filter((s) => s.at > t - 10 * 60_000);
    const input = { samples, now: t, current: replicas, target: o.target, minReplicas: o.minReplicas ?? 1, maxReplicas: o.maxReplicas ?? 100 };
    let decision: KpaDecision | ApaDecision;
    if (o.algorithm === 'kpa') {
      const d = kpa({ ...input, state: kState }, kpaOptions);
      kState = d.state;
      decision = d;
    } else {
      const d = apa({ ...input, state: aState }, apaOptions);
      aState = d.state;
      decision = d;
    }
    out.push({ t, before: replicas, after: decision.desired, decision });
    replicas = decision.desired;
  }
  return out;
}

/** Times the replica count changed. */
export function changes(ticks: readonly SimTick[]): number {
  return ticks.filter((k) => k.after !== k.before).length;
}

/** The distinct replica counts in order, e.g. [8, 4, 2, 1]. */
export function steps(ticks: readonly SimTick[]): number[] {
  const out: number[] = [ticks[0]!.before];
  for (const k of ticks) if (k.after !== out[out.length - 1]) out.push(k.after);
  return out;
}

/** The first tick time (ms) at which replicas reached at least n; undefined if never. */
export function firstAtLeast(ticks: readonly SimTick[], n: number): number | undefined {
  return ticks.find((k) => k.after >= n)?.t;
}

/** A seeded uniform PRNG in [0, 1) (mulberry32), so noise tests are repeatable. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Noise that is a function of time (the same t gives the same value), uniform in [-amplitude, amplitude]. */
export function noise(seed: number, amplitude: number, tickMs = 2_000): (t: number) => number {
  return (t) => {
    const i = Math.round(t / tickMs);
    return (rng((seed * 0x9e3779b1) ^ Math.imul(i, 0x85ebca6b))() * 2 - 1) * amplitude;
  };
}
