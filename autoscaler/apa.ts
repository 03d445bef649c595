/**
 * APA: AIBrix's Application-specific Pod Autoscaler (pkg/controller/podautoscaler/algorithm/apa.go, after Huo et
 * al., "High Concurrency Response Strategy based on Kubernetes Horizontal Pod Autoscaler", 2023), over the load
 * model of algorithm.ts. A pure function; the scale-down delay's memory goes in and out as `state`.
 *
 * | option            | Switchyard | AIBrix APA                                   | Knative KPA (for comparison)   |
 * |-------------------|------------|----------------------------------------------|--------------------------------|
 * | tick              | 2 s (loop) | controller resync                            | 2 s                            |
 * | windowMs          | 60 s       | 60 s metric window                           | stable window 60 s             |
 * | upTolerance       | 0.1        | up_fluctuation_tolerance 0.1                 | none                           |
 * | downTolerance     | 0.2        | down_fluctuation_tolerance 0.2 (APA scaling  | none                           |
 * |                   |            | context; newer shared default 0.1)           |                                |
 * | maxScaleUpRate    | 2          | max_scale_up_rate 2                          | 1000                           |
 * | maxScaleDownRate  | 2          | max_scale_down_rate 2                        | 2                              |
 * | scaleDownDelayMs  | 300 s      | scale-down cooldown window 300 s (newer      | scale-down-delay 0 s           |
 * |                   |            | releases; none in the first APA)             |                                |
 * | min / max         | 1 / req.   | minReplicas / maxReplicas                    | min-scale 0 / max-scale 0      |
 *
 * The algorithm, per tick:
 *   1. load = mean load over the window (no sample: no decision, no_data); per replica = load / current.
 *   2. ratio = per replica / target. Above 1 + upTolerance: desired = ceil(current x ratio) = ceil(load / target),
 *      at most ceil(current x maxScaleUpRate). Below 1 - downTolerance: the same formula, at least
 *      floor(current / maxScaleDownRate). Inside the band: current (within_tolerance).
 *   3. scale-down delay: the highest desired count of the last scaleDownDelayMs, so a drop must last that long
 *      before replicas go. Here it is a stabilisation window (Kubernetes HPA's and Knative's shape) where AIBrix
 *      has a cooldown since the last scaling; both keep replicas through a short dip. 300 s because an engine
 *      replica costs minutes to bring back.
 *   4. min/max replicas.
 * The band is what keeps APA still under noise: a per-replica value wandering within -20 %..+10 % of the target
 * never moves it.
 */

import {
  bound,
  ceilReplicas,
  checkCommon,
  definedOnly,
  delayScaleDown,
  inWindow,
  meanLoad,
  reasonFor,
  type Limit,
  type Recommendation,
  type ScaleDecision,
  type ScaleInput,
} from './algorithm.js';

export interface ApaOptions {
  readonly windowMs: number;
  /** Scale up only when the per-replica value exceeds target x (1 + this). */
  readonly upTolerance: number;
  /** Scale down only when the per-replica value is below target x (1 - this). */
  readonly downTolerance: number;
  readonly maxScaleUpRate: number;
  readonly maxScaleDownRate: number;
  readonly scaleDownDelayMs: number;
}

export const APA_DEFAULTS: ApaOptions = Object.freeze({
  windowMs: 60_000,
  upTolerance: 0.1,
  downTolerance: 0.2,
  maxScaleUpRate: 2,
  maxScaleDownRate: 2,
  scaleDownDelayMs: 300_000,
});

/** Defaults filled in. Throws RangeError on nonsense. */
export function resolveApaOptions(partial: Partial<ApaOptions> = {}): ApaOptions {
  const o: ApaOptions = { ...APA_DEFAULTS, ...definedOnly(partial) };
  if (!(o.windowMs > 0)) throw new RangeError(`apa: windowMs must be > 0, got ${o.windowMs}`);
  if (!(o.upTolerance >= 0)) throw new RangeError(`apa: upTolerance must be >= 0, got ${o.upTolerance}`);
  if (!(o.downTolerance >= 0 && o.downTolerance < 1)) throw new RangeError(`apa: downTolerance must be in [0, 1), got ${o.downTolerance}`);
  checkCommon('apa', o);
  return o;
}

export interface ApaState {
  /** Recommendations of the last scaleDownDelayMs. */
  readonly recent: readonly Recommendation[];
}

export const APA_INITIAL_STATE: ApaState = Object.freeze({ recent: [] });

export interface ApaDecision extends ScaleDecision {
  /** per replica / target. */
  readonly ratio: number;
  readonly state: ApaState;
}

export interface ApaInput extends ScaleInput {
  readonly state: ApaState;
}

export function apa(input: ApaInput, options: ApaOptions = APA_DEFAULTS): ApaDecision {
  const { now, current, target, state } = input;
  const ready = Math.max(1, current);
  const samples = inWindow(input.samples, now, options.windowMs);
  const load = meanLoad(samples);
  const base = { current, target, window: 'apa' as const, windowMs: options.windowMs, samples: samples.length };
  if (load === undefined) {
    return { ...base, desired: current, reason: 'no_data', load: 0, perReplica: 0, recommended: current, limitedBy: [], ratio: 0, state };
  }
  const perReplica = load / ready;
  const ratio = perReplica / target;
  const recommended = ceilReplicas(load / target);
  const limitedBy: Limit[] = [];
  let desired: number;
  if (ratio > 1 + options.upTolerance) {
    const maxUp = ceilReplicas(options.maxScaleUpRate * ready);
    desired = recommended;
    if (desired > maxUp) {
      limitedBy.push('max_scale_up_rate');
      desired = maxUp;
    }
  } else if (ratio < 1 - options.downTolerance) {
    const maxDown = Math.floor(ready / options.maxScaleDownRate);
    desired = recommended;
    if (desired < maxDown) {
      limitedBy.push('max_scale_down_rate');
      desired = maxDown;
    }
  } else {
    desired = current;
    if (recommended !== current) limitedBy.push('tolerance');
  }
  const delayed = delayScaleDown(state.recent, now, desired, options.scaleDownDelayMs);
  if (delayed.desired > desired) limitedBy.push('scale_down_delay');
  desired = bound(delayed.desired, input.minReplicas, input.maxReplicas, limitedBy);
  return {
    ...base,
    desired,
    reason: reasonFor(current, desired, limitedBy),
    load,
    perReplica,
    recommended,
    limitedBy,
    ratio,
    state: { recent: delayed.recent },
  };
}

/** How far back APA reads samples: the loop may drop older ones. */
export function apaHorizonMs(options: ApaOptions): number {
  return options.windowMs;
}
