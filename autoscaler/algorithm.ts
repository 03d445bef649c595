/**
 * What the scaling algorithms (kpa.ts, apa.ts) share: the samples they read, the decision they return, and the
 * small pure helpers both use. Nothing here does I/O or reads a clock; the loop (autoscaler.ts) passes `now`.
 *
 * The metric model. Every sample is a per-replica average (the metric summed over the engines that reported,
 * divided by how many reported) together with that count. The algorithms work on the load those imply,
 * value x replicas, averaged over a time window: the total demand in the metric's unit (e.g. 2.4 "engines' worth"
 * of KV cache), which does not change when replicas are added, whereas the per-replica value falls as new replicas
 * take their share. Desired replicas are then ceil(load / target), the per-replica target. This is Knative's model
 * (it windows the total concurrency over all pods, then divides by the per-pod target) and AIBrix's (its APA
 * compares load / ready pods with the target); windowing per-replica values instead would keep asking for more
 * replicas after a scale-up, until the window forgot the values measured with fewer.
 */

/** One reading of the metric. */
export interface Sample {
  /** ms (the loop's clock). */
  readonly at: number;
  /** The metric averaged per replica at that instant. */
  readonly value: number;
  /** Replicas the value is averaged over; value x replicas is the load. */
  readonly replicas: number;
}

/**
 * Why a decision came out as it did. desired differs from current: scale_up or scale_down. desired equals
 * current: steady (the load asks for exactly these), or the limit that held a different recommendation back.
 */
export type DecisionReason =
  | 'scale_up'
  | 'scale_down'
  | 'steady'
  /** APA: the per-replica value is inside the tolerance band around the target. */
  | 'within_tolerance'
  /** KPA: the load asks for fewer replicas, but no scale-down happens while panicking. */
  | 'panic_hold'
  /** Fewer replicas were asked for less long than the scale-down delay. */
  | 'scale_down_delayed'
  | 'at_min'
  | 'at_max'
  /** No sample inside the window: no decision (desired stays current). */
  | 'no_data';

/** A step that moved the recommendation, in the order they apply. */
export type Limit =
  | 'tolerance'
  | 'max_scale_up_rate'
  | 'max_scale_down_rate'
  | 'panic'
  | 'scale_down_delay'
  | 'min_replicas'
  | 'max_replicas';

/** The part of a decision every algorithm returns. */
export interface ScaleDecision {
  readonly desired: number;
  readonly reason: DecisionReason;
  /** Replicas the decision started from. */
  readonly current: number;
  /** The load the decision rests on: mean of value x replicas over `windowMs` (0 with no data). */
  readonly load: number;
  /** load / current replicas: what is compared with the per-replica target. */
  readonly perReplica: number;
  readonly target: number;
  /** Which window `load` is over: KPA's stable or panic one, or APA's only one. */
  readonly window: 'stable' | 'panic' | 'apa';
  readonly windowMs: number;
  /** Samples inside that window. */
  readonly samples: number;
  /** ceil(load / target) before any limit (current with no data). */
  readonly recommended: number;
  /** The steps that changed the recommendation on its way to `desired`. */
  readonly limitedBy: readonly Limit[];
}

/** A past recommendation, kept for the scale-down delay. */
export interface Recommendation {
  readonly at: number;
  readonly desired: number;
}

/**
 * ceil that forgives floating-point noise: 1.8 / 0.6 is 3.0000000000000004 in binary floating point, and a plain
 * ceil would ask for a fourth replica for a load exactly on target.
 */
export function ceilReplicas(x: number): number {
  return Math.max(0, Math.ceil(x - 1e-9));
}

/** Samples with now - windowMs < at <= now. */
export function inWindow(samples: readonly Sample[], now: number, windowMs: number): Sample[] {
  return samples.filter((s) => s.at > now - windowMs && s.at <= now);
}

/** Mean load (value x replicas) of the samples; undefined when there are none. */
export function meanLoad(samples: readonly Sample[]): number | undefined {
  if (samples.length === 0) return undefined;
  let sum = 0;
  for (const s of samples) sum += s.value * s.replicas;
  return sum / samples.length;
}

/**
 * The scale-down delay: the largest recommendation of the last delayMs, this one included (Knative's delay
 * window, AIBrix's and Kubernetes HPA's scale-down stabilisation). A lower recommendation only takes effect once
 * it has been the highest for a whole delay; a higher one takes effect at once. Returns the recommendations to
 * keep for the next call.
 */
export function delayScaleDown(
  recent: readonly Recommendation[],
  now: number,
  desired: number,
  delayMs: number,
): { desired: number; recent: Recommendation[] } {
  if (delayMs <= 0) return { desired, recent: [] };
  const kept = recent.filter((r) => r.at > now - delayMs && r.at < now);
  kept.push({ at: now, desired });
  let max = desired;
  for (const r of kept) max = Math.max(max, r.desired);
  return { desired: max, recent: kept };
}

/** Bounds, recording which one applied. */
export function bound(desired: number, min: number, max: number, limitedBy: Limit[]): number {
  if (desired > max) {
    limitedBy.push('max_replicas');
    return max;
  }
  if (desired < min) {
    limitedBy.push('min_replicas');
    return min;
  }
  return desired;
}

const HOLD_REASON: Readonly<Record<Limit, DecisionReason>> = {
  tolerance: 'within_tolerance',
  max_scale_up_rate: 'steady',
  max_scale_down_rate: 'steady',
  panic: 'panic_hold',
  scale_down_delay: 'scale_down_delayed',
  min_replicas: 'at_min',
  max_replicas: 'at_max',
};

/** scale_up / scale_down when desired moved; otherwise the last limit that held it at current, else steady. */
export function reasonFor(current: number, desired: number, limitedBy: readonly Limit[]): DecisionReason {
  if (desired > current) return 'scale_up';
  if (desired < current) return 'scale_down';
  const last = limitedBy[limitedBy.length - 1];
  return last === undefined ? 'steady' : HOLD_REASON[last];
}

/** Throws RangeError unless the options make sense; both algorithms call it on their resolved options. */
export function checkCommon(name: string, o: { maxScaleUpRate: number; maxScaleDownRate: number; scaleDownDelayMs: number }): void {
  if (!(o.maxScaleUpRate > 1)) throw new RangeError(`${name}: maxScaleUpRate must be > 1, got ${o.maxScaleUpRate}`);
  if (!(o.maxScaleDownRate > 1)) throw new RangeError(`${name}: maxScaleDownRate must be > 1, got ${o.maxScaleDownRate}`);
  if (!(o.scaleDownDelayMs >= 0)) throw new RangeError(`${name}: scaleDownDelayMs must be >= 0, got ${o.scaleDownDelayMs}`);
}

export interface ReplicaBounds {
  readonly minReplicas: number;
  readonly maxReplicas: number;
}

/** What every algorithm is given besides its own state. */
export interface ScaleInput extends ReplicaBounds {
  /** Every sample the loop holds (older than the algorithm's longest window may be dropped). */
  readonly samples: readonly Sample[];
  readonly now: number;
  /** Replicas the target has now (the actuator's count: asked for, ready or not). */
  readonly current: number;
  /** The per-replica target value. */
  readonly target: number;
}

/** The fields of `partial` that are set: `{ a: undefined }` must not override a default. */
export function definedOnly<T extends object>(partial: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(partial)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
