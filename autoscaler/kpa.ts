/**
 * KPA: Knative's Pod Autoscaler algorithm (knative.dev/serving pkg/autoscaler/scaling), as AIBrix also ships it,
 * over the load model of algorithm.ts. A pure function: the panic state and the scale-down delay's memory go in
 * as `state` and come back out.
 *
 * | option            | Switchyard      | Knative (config-autoscaler)           | AIBrix KPA                    |
 * |-------------------|-----------------|---------------------------------------|-------------------------------|
 * | tick              | 2 s (loop)      | 2 s                                   | controller resync             |
 * | stableWindowMs    | 60 s            | stable-window 60 s (6 s..1 h)         | 60 s                          |
 * | panicWindowMs     | 6 s = 10 %      | panic-window-percentage 10 % -> 6 s   | 10 s                          |
 * |                   | of stable       |                                       |                               |
 * | panicThreshold    | 2.0             | panic-threshold-percentage 200 %      | 2.0                           |
 * | maxScaleUpRate    | 1000            | max-scale-up-rate 1000                | 2                             |
 * | maxScaleDownRate  | 2               | max-scale-down-rate 2                 | 2                             |
 * | scaleDownDelayMs  | 5 min           | scale-down-delay 0 s                  | 30 min (KPA spec); newer      |
 * |                   |                 |                                       | releases: 5 min cooldown      |
 * | min / max         | 1 / required    | min-scale 0 / max-scale 0 (no limit)  | minReplicas / maxReplicas     |
 * | target            | per replica     | container-concurrency-target 100 x    | targetValue                   |
 * |                   | (config)        | target-utilization 70 %               |                               |
 *
 * Why the scale-down delay is 5 min, not Knative's 0: Knative's replicas are cheap containers, an engine replica
 * loads gigabytes of weights for minutes. KPA has no dead band: a load whose stable-window mean wanders across a
 * replica boundary (ceil(load / target) alternating between N and N+1) adds a replica when it crosses up and, with
 * no delay, removes it when it crosses down. In test/unit/autoscaler/kpa.test.ts, a load on a boundary with
 * +-17 % noise per tick changes the replicas about 146 times an hour with no delay, 24 with 60 s, once with 5 min
 * (the same as Kubernetes HPA's scale-down stabilisation and AIBrix's cooldown).
 * Scale to zero, activation scale, initial scale and target burst capacity (Knative's activator) have no
 * counterpart here: an engine at zero replicas reports no metric to scale on, so minReplicas is at least 1.
 *
 * The algorithm, per tick (Knative's autoscaler.Scale):
 *   1. stable load = mean load over the stable window, panic load = over the panic window; no sample in the stable
 *      window: no decision (no_data).
 *   2. recommendations ceil(load / target) for each, kept within [floor(current / maxScaleDownRate),
 *      ceil(current x maxScaleUpRate)].
 *   3. panic: the panic recommendation / current >= panicThreshold starts panic mode (or extends it); panic mode
 *      ends once the threshold has not been met for a whole stable window. While panicking the desired count is
 *      max(stable, panic) recommendation, and never lower than the highest desired count of this panic: no
 *      scale-down in panic.
 *   4. scale-down delay: the highest desired count of the last scaleDownDelayMs.
 *   5. min/max replicas.
 * `current` is the actuator's count (replicas asked for, ready or not) where Knative uses the ready pods: a replica
 * still loading its weights is already counted, so the load it will take is not asked for twice.
 * On start with more than one replica, the loop begins in panic mode (kpaInitialState), as Knative does: the
 * windows are empty after a restart, and a short window of data must not scale a large deployment down.
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

export interface KpaOptions {
  readonly stableWindowMs: number;
  readonly panicWindowMs: number;
  /** Panic starts when the panic window's recommendation is this many times the current replicas. */
  readonly panicThreshold: number;
  /** At most ceil(current x this) replicas after one decision. */
  readonly maxScaleUpRate: number;
  /** At least floor(current / this) replicas after one decision. */
  readonly maxScaleDownRate: number;
  readonly scaleDownDelayMs: number;
}

/** The panic window as a share of the stable window when only the stable window is set (Knative's percentage). */
export const KPA_PANIC_WINDOW_FRACTION = 0.1;

export const KPA_DEFAULTS: KpaOptions = Object.freeze({
  stableWindowMs: 60_000,
  panicWindowMs: 6_000,
  panicThreshold: 2,
  maxScaleUpRate: 1000,
  maxScaleDownRate: 2,
  scaleDownDelayMs: 300_000,
});

/** Defaults filled in; the panic window defaults to 10 % of the stable window given. Throws RangeError on nonsense. */
export function resolveKpaOptions(partial: Partial<KpaOptions> = {}): KpaOptions {
  const stableWindowMs = partial.stableWindowMs ?? KPA_DEFAULTS.stableWindowMs;
  const o: KpaOptions = {
    ...KPA_DEFAULTS,
    ...definedOnly(partial),
    stableWindowMs,
    panicWindowMs: partial.panicWindowMs ?? Math.max(1, Math.round(stableWindowMs * KPA_PANIC_WINDOW_FRACTION)),
  };
  if (!(o.stableWindowMs > 0)) throw new RangeError(`kpa: stableWindowMs must be > 0, got ${o.stableWindowMs}`);
  if (!(o.panicWindowMs > 0 && o.panicWindowMs <= o.stableWindowMs)) {
    throw new RangeError(`kpa: panicWindowMs must be > 0 and <= stableWindowMs (${o.stableWindowMs}), got ${o.panicWindowMs}`);
  }
  if (!(o.panicThreshold > 1)) throw new RangeError(`kpa: panicThreshold must be > 1, got ${o.panicThreshold}`);
  checkCommon('kpa', o);
  return o;
}

export interface KpaState {
  /** When the current panic began; undefined when not panicking. */
  readonly panicSince: number | undefined;
  /** The last tick the panic threshold was met; panic ends a stable window after it. */
  readonly lastOverThresholdAt: number | undefined;
  /** The highest desired count of this panic (0 when not panicking). */
  readonly maxPanicReplicas: number;
  /** Recommendations of the last scaleDownDelayMs. */
  readonly recent: readonly Recommendation[];
}

/** The state to start with: panicking at `current` when there is more than one replica (see the header). */
export function kpaInitialState(current: number, now: number): KpaState {
  return current > 1
    ? { panicSince: now, lastOverThresholdAt: now, maxPanicReplicas: current, recent: [] }
    : { panicSince: undefined, lastOverThresholdAt: undefined, maxPanicReplicas: 0, recent: [] };
}

export interface KpaDecision extends ScaleDecision {
  readonly panicking: boolean;
  /** When the panic began, while panicking. */
  readonly panicSince: number | undefined;
  readonly stable: WindowView;
  readonly panic: WindowView;
  readonly state: KpaState;
}

export interface WindowView {
  readonly load: number;
  readonly perReplica: number;
  readonly samples: number;
  /** ceil(load / target), before limits. */
  readonly recommended: number;
}

export interface KpaInput extends ScaleInput {
  readonly state: KpaState;
}

export function kpa(input: KpaInput, options: KpaOptions = KPA_DEFAULTS): KpaDecision {
  const { now, current, target, state } = input;
  const ready = Math.max(1, current);
  const stableSamples = inWindow(input.samples, now, options.stableWindowMs);
  const stableLoad = meanLoad(stableSamples);
  if (stableLoad === undefined) {
    const empty: WindowView = { load: 0, perReplica: 0, samples: 0, recommended: current };
    return {
      desired: current,
      reason: 'no_data',
      current,
      load: 0,
      perReplica: 0,
      target,
      window: 'stable',
      windowMs: options.stableWindowMs,
      samples: 0,
      recommended: current,
      limitedBy: [],
      panicking: state.panicSince !== undefined,
      panicSince: state.panicSince,
      stable: empty,
      panic: empty,
      state,
    };
  }
  const panicSamples = inWindow(input.samples, now, options.panicWindowMs);
  const panicLoad = meanLoad(panicSamples) ?? stableLoad;

  const maxUp = ceilReplicas(options.maxScaleUpRate * ready);
  const maxDown = Math.floor(ready / options.maxScaleDownRate);
  const dspc = ceilReplicas(stableLoad / target);
  const dppc = ceilReplicas(panicLoad / target);
  const stableLimits: Limit[] = [];
  const panicLimits: Limit[] = [];
  const stableDesired = rateLimit(dspc, maxDown, maxUp, stableLimits);
  const panicDesired = rateLimit(dppc, maxDown, maxUp, panicLimits);

  let { panicSince, lastOverThresholdAt, maxPanicReplicas } = state;
  const overThreshold = dppc / ready >= options.panicThreshold;
  if (overThreshold) {
    panicSince ??= now;
    lastOverThresholdAt = now;
  } else if (panicSince !== undefined && (lastOverThresholdAt === undefined || now > lastOverThresholdAt + options.stableWindowMs)) {
    panicSince = undefined;
    lastOverThresholdAt = undefined;
    maxPanicReplicas = 0;
  }
  const panicking = panicSince !== undefined;

  let desired = stableDesired;
  let limitedBy: Limit[] = stableLimits;
  let usePanicWindow = false;
  if (panicking) {
    // The stable window can read higher than the panic one (the burst is over but still in the long average):
    // provision for the larger.
    if (panicDesired > stableDesired) {
      desired = panicDesired;
      limitedBy = panicLimits;
      usePanicWindow = true;
    }
    limitedBy = [...limitedBy];
    if (desired > maxPanicReplicas) maxPanicReplicas = desired;
    else if (desired < maxPanicReplicas) {
      limitedBy.push('panic');
      desired = maxPanicReplicas;
    }
  }
  const delayed = delayScaleDown(state.recent, now, desired, options.scaleDownDelayMs);
  if (delayed.desired > desired) limitedBy.push('scale_down_delay');
  desired = bound(delayed.desired, input.minReplicas, input.maxReplicas, limitedBy);

  const stable: WindowView = { load: stableLoad, perReplica: stableLoad / ready, samples: stableSamples.length, recommended: dspc };
  const panic: WindowView = { load: panicLoad, perReplica: panicLoad / ready, samples: panicSamples.length, recommended: dppc };
  const used = usePanicWindow ? panic : stable;
  return {
    desired,
    reason: reasonFor(current, desired, limitedBy),
    current,
    load: used.load,
    perReplica: used.perReplica,
    target,
    window: usePanicWindow ? 'panic' : 'stable',
    windowMs: usePanicWindow ? options.panicWindowMs : options.stableWindowMs,
    samples: used.samples,
    recommended: used.recommended,
    limitedBy,
    panicking,
    panicSince,
    stable,
    panic,
    state: { panicSince, lastOverThresholdAt, maxPanicReplicas, recent: delayed.recent },
  };
}

/** How far back KPA reads samples: the loop may drop older ones. */
export function kpaHorizonMs(options: KpaOptions): number {
  return options.stableWindowMs;
}

function rateLimit(recommended: number, maxDown: number, maxUp: number, limitedBy: Limit[]): number {
  if (recommended > maxUp) {
    limitedBy.push('max_scale_up_rate');
    return maxUp;
  }
  if (recommended < maxDown) {
    limitedBy.push('max_scale_down_rate');
    return maxDown;
  }
  return recommended;
}
