/**
 * The autoscaler loop. Every intervalMs (default 2 s, Knative's tick), for every scaling target at once:
 *   1. current = actuator.currentReplicas(target) (replicas asked for, ready or not);
 *   2. read the metric source; a failure, or no data (an empty PromQL result), ends the target's tick with no
 *      decision: replicas stay as they are, except below minReplicas (a local actuator starts at 0 replicas, which
 *      report nothing): then the target is scaled to minReplicas;
 *   3. append the sample to the target's window (samples older than the algorithm's longest window dropped);
 *   4. run the algorithm (kpa.ts or apa.ts: pure, its state kept here between ticks);
 *   5. desired != current: actuator.scale(target, desired).
 * Each tick's outcome is kept (the last `decisionHistory` per target, with the inputs) for GET /explain, and
 * exported as Prometheus series:
 *   switchyard_autoscaler_desired_replicas{target}, switchyard_autoscaler_current_replicas{target},
 *   switchyard_autoscaler_metric_value{target} (per replica, over the window the decision used),
 *   switchyard_autoscaler_target_value{target}, switchyard_autoscaler_panic{target} (KPA, 1 while panicking),
 *   switchyard_autoscaler_decisions_total{target,reason}, switchyard_autoscaler_errors_total{target,stage}.
 *
 * The autoscaler owns the targets' sources and actuators: close() closes them.
 */

import { Counter, Gauge, type Registry } from 'prom-client';
import { createMetricsRegistry } from '../core/metrics.js';
import type { Actuator } from './actuator.js';
import type { DecisionReason, Sample } from './algorithm.js';
import { apa, apaHorizonMs, APA_INITIAL_STATE, type ApaDecision, type ApaOptions, type ApaState } from './apa.js';
import { kpa, kpaHorizonMs, kpaInitialState, type KpaDecision, type KpaOptions, type KpaState } from './kpa.js';
import { MetricSourceError, type MetricName, type MetricReading, type MetricSource } from './sources/source.js';
import { explainText, summarize } from './explain.js';

export type AlgorithmSpec = { readonly kind: 'kpa'; readonly options: KpaOptions } | { readonly kind: 'apa'; readonly options: ApaOptions };

/** One scaling target: a model's engine deployment. */
export interface ScalingTarget {
  /** Also the name passed to the actuator. */
  readonly name: string;
  readonly metric: MetricName;
  /** The per-replica value to hold. */
  readonly targetValue: number;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  readonly algorithm: AlgorithmSpec;
  readonly source: MetricSource;
  readonly actuator: Actuator;
}

/** The part of a pino (or Fastify) logger the loop uses. */
export interface AutoscalerLogger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
}

export interface AutoscalerOptions {
  /** Between ticks. Default 2 s. */
  readonly intervalMs?: number;
  /** Tick outcomes kept per target. Default 100. */
  readonly decisionHistory?: number;
  /** The decisions' clock (samples' times, windows, delays). Default Date.now. */
  readonly now?: () => number;
  /** Where the series go. Default a registry of its own (no process metrics). */
  readonly registry?: Registry;
  readonly logger?: AutoscalerLogger;
}

export const AUTOSCALER_DEFAULTS = Object.freeze({ intervalMs: 2_000, decisionHistory: 100 });

/** A tick's outcome: the algorithm's reason, or why there was no decision. */
export type TickReason = DecisionReason | 'source_error' | 'actuator_error';

/** The algorithm's decision without its state (what /explain shows). */
export type DecisionInputs = Omit<KpaDecision, 'state'> | Omit<ApaDecision, 'state'>;

export interface DecisionRecord {
  readonly target: string;
  readonly at: number;
  readonly algorithm: 'kpa' | 'apa';
  readonly metric: MetricName;
  readonly targetValue: number;
  readonly reason: TickReason;
  /** Replicas before the decision; undefined when the actuator could not say. */
  readonly current: number | undefined;
  /** Replicas decided; undefined when no decision was made (source or actuator error, unless below minReplicas). */
  readonly desired: number | undefined;
  /** actuator.scale() was called and accepted. */
  readonly scaled: boolean;
  /** What failed: the source, the actuator's count, or the scale call. */
  readonly error?: string;
  /** This tick's reading. */
  readonly reading?: MetricReading;
  readonly decision?: DecisionInputs;
}

interface TargetRuntime {
  readonly spec: ScalingTarget;
  samples: Sample[];
  kpaState: KpaState | undefined;
  apaState: ApaState;
  history: DecisionRecord[];
  lastChange: DecisionRecord | undefined;
  lastError: string | undefined;
  running: Promise<DecisionRecord> | undefined;
}

export interface TargetExplanation {
  readonly name: string;
  readonly algorithm: AlgorithmSpec;
  readonly metric: MetricName;
  readonly targetValue: number;
  readonly minReplicas: number;
  readonly maxReplicas: number;
  readonly source: string;
  readonly actuator: string;
  /** The last tick in words. */
  readonly summary: string;
  readonly last: DecisionRecord | undefined;
  /** The last tick that changed (or tried to change) the replicas. */
  readonly lastChange: DecisionRecord | undefined;
  /** Newest first. */
  readonly decisions: readonly DecisionRecord[];
}

export interface Explanation {
  readonly at: number;
  readonly intervalMs: number;
  readonly targets: readonly TargetExplanation[];
}

interface Series {
  desired: Gauge<'target'>;
  current: Gauge<'target'>;
  value: Gauge<'target'>;
  targetValue: Gauge<'target'>;
  panic: Gauge<'target'>;
  decisions: Counter<'target' | 'reason'>;
  errors: Counter<'target' | 'stage'>;
}

export class Autoscaler {
  readonly registry: Registry;
  readonly intervalMs: number;
  readonly #now: () => number;
  readonly #historySize: number;
  readonly #log: AutoscalerLogger | undefined;
  readonly #targets: TargetRuntime[];
  readonly #series: Series;
  #timer: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #stopped = true;
  #closed = false;

  constructor(targets: readonly ScalingTarget[], options: AutoscalerOptions = {}) {
    this.intervalMs = options.intervalMs ?? AUTOSCALER_DEFAULTS.intervalMs;
    if (!(this.intervalMs > 0)) throw new RangeError(`autoscaler: intervalMs must be > 0, got ${this.intervalMs}`);
    this.#historySize = options.decisionHistory ?? AUTOSCALER_DEFAULTS.decisionHistory;
    if (!(this.#historySize >= 1)) throw new RangeError(`autoscaler: decisionHistory must be >= 1, got ${this.#historySize}`);
    this.#now = options.now ?? Date.now;
    this.#log = options.logger;
    const names = new Set<string>();
    for (const t of targets) {
      if (names.has(t.name)) throw new RangeError(`autoscaler: duplicate target "${t.name}"`);
      names.add(t.name);
      if (!(t.targetValue > 0)) throw new RangeError(`autoscaler: target "${t.name}": targetValue must be > 0`);
      if (!(Number.isInteger(t.minReplicas) && Number.isInteger(t.maxReplicas) && t.minReplicas >= 0 && t.minReplicas <= t.maxReplicas)) {
        throw new RangeError(`autoscaler: target "${t.name}": need integers 0 <= minReplicas <= maxReplicas`);
      }
    }
    this.#targets = targets.map((spec) => ({
      spec,
      samples: [],
      kpaState: undefined,
      apaState: APA_INITIAL_STATE,
      history: [],
      lastChange: undefined,
      lastError: undefined,
      running: undefined,
    }));
    this.registry = options.registry ?? createMetricsRegistry({ processMetrics: false });
    this.#series = this.#createSeries();
  }

  /** Ticks every intervalMs until stop(); the first tick runs at once. */
  start(): void {
    if (this.#closed) throw new Error('autoscaler: closed');
    if (!this.#stopped) return;
    this.#stopped = false;
    const run = (): void => {
      const started = performance.now();
      // A tick records its own failures; the catch only guards the schedule against a bug (or a throwing logger).
      this.#loop = this.tick()
        .then(
          () => {},
          () => {},
        )
        .then(() => {
          if (this.#stopped) return;
          this.#timer = setTimeout(run, Math.max(0, this.intervalMs - (performance.now() - started)));
        });
    };
    run();
  }

  /** Stops ticking; resolves once a tick in progress has finished. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#loop;
  }

  /** stop(), then closes every target's source and actuator. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    await Promise.allSettled(this.#targets.flatMap((t) => [t.spec.source.close(), t.spec.actuator.close()]));
  }

  /** One tick over every target, in parallel. A target whose previous tick is still running is not started again. */
  async tick(): Promise<DecisionRecord[]> {
    return Promise.all(
      this.#targets.map((t) => {
        if (t.running !== undefined) return t.running;
        const p = this.#tickTarget(t).finally(() => {
          t.running = undefined;
        });
        t.running = p;
        return p;
      }),
    );
  }

  /** What each target decided last and why, with its recent decisions (newest first). */
  explain(): Explanation {
    return {
      at: this.#now(),
      intervalMs: this.intervalMs,
      targets: this.#targets.map((t) => {
        const last = t.history[t.history.length - 1];
        return {
          name: t.spec.name,
          algorithm: t.spec.algorithm,
          metric: t.spec.metric,
          targetValue: t.spec.targetValue,
          minReplicas: t.spec.minReplicas,
          maxReplicas: t.spec.maxReplicas,
          source: t.spec.source.description,
          actuator: t.spec.actuator.kind,
          summary: summarize(t.spec.name, t.spec.algorithm, last),
          last,
          lastChange: t.lastChange,
          decisions: [...t.history].reverse(),
        };
      }),
    };
  }

  /** explain() in words, for `curl /explain` in a terminal. */
  explainText(): string {
    return explainText(this.explain());
  }

  async #tickTarget(t: TargetRuntime): Promise<DecisionRecord> {
    const { spec } = t;
    const at = this.#now();
    const base = { target: spec.name, at, algorithm: spec.algorithm.kind, metric: spec.metric, targetValue: spec.targetValue };
    let current: number;
    try {
      current = await spec.actuator.currentReplicas(spec.name);
      if (!Number.isInteger(current) || current < 0) throw new Error(`not a replica count: ${String(current)}`);
    } catch (err) {
      const error = `cannot read current replicas (${spec.actuator.kind}): ${(err as Error).message}`;
      this.#series.errors.inc({ target: spec.name, stage: 'current' });
      this.#warnOnce(t, error);
      return this.#record(t, { ...base, reason: 'actuator_error', current: undefined, desired: undefined, scaled: false, error });
    }
    this.#series.current.set({ target: spec.name }, current);

    let reading: MetricReading;
    try {
      reading = await spec.source.read();
    } catch (err) {
      const noData = err instanceof MetricSourceError && err.code === 'no_data';
      const error = (err as Error).message;
      if (!noData) this.#series.errors.inc({ target: spec.name, stage: 'source' });
      this.#warnOnce(t, error);
      // Below minReplicas (the local actuator starts at 0) there may be nothing to read a metric from: bring the
      // target up to its minimum without one, as Kubernetes HPA does for a count below minReplicas.
      if (current < spec.minReplicas) return this.#scaleToMin(t, base, current, error);
      this.#series.desired.set({ target: spec.name }, current);
      return this.#record(t, { ...base, reason: noData ? 'no_data' : 'source_error', current, desired: undefined, scaled: false, error });
    }

    t.samples.push(toSample(reading, current, at));
    const horizon = spec.algorithm.kind === 'kpa' ? kpaHorizonMs(spec.algorithm.options) : apaHorizonMs(spec.algorithm.options);
    t.samples = t.samples.filter((s) => s.at > at - horizon);

    const input = { samples: t.samples, now: at, current, target: spec.targetValue, minReplicas: spec.minReplicas, maxReplicas: spec.maxReplicas };
    let decision: DecisionInputs;
    let panicking = false;
    if (spec.algorithm.kind === 'kpa') {
      const { state, ...rest } = kpa({ ...input, state: (t.kpaState ??= kpaInitialState(current, at)) }, spec.algorithm.options);
      t.kpaState = state;
      decision = rest;
      panicking = rest.panicking;
    } else {
      const { state, ...rest } = apa({ ...input, state: t.apaState }, spec.algorithm.options);
      t.apaState = state;
      decision = rest;
    }

    let scaled = false;
    let error: string | undefined;
    if (decision.desired !== current && decision.reason !== 'no_data') {
      try {
        await spec.actuator.scale(spec.name, decision.desired);
        scaled = true;
        this.#log?.info({ target: spec.name, from: current, to: decision.desired, reason: decision.reason, perReplica: decision.perReplica, limitedBy: decision.limitedBy }, 'autoscaler: scaled');
      } catch (err) {
        error = `scale to ${decision.desired} failed (${spec.actuator.kind}): ${(err as Error).message}`;
        this.#series.errors.inc({ target: spec.name, stage: 'scale' });
        this.#warnOnce(t, error);
      }
    }
    if (error === undefined) t.lastError = undefined;
    this.#series.desired.set({ target: spec.name }, decision.desired);
    this.#series.value.set({ target: spec.name }, decision.perReplica);
    this.#series.panic.set({ target: spec.name }, panicking ? 1 : 0);
    const record: DecisionRecord = { ...base, reason: decision.reason, current, desired: decision.desired, scaled, reading, decision, ...(error === undefined ? {} : { error }) };
    if (decision.desired !== current) t.lastChange = record;
    return this.#record(t, record);
  }

  /** A target below minReplicas whose source gave nothing: scale to minReplicas, no algorithm involved. */
  async #scaleToMin(t: TargetRuntime, base: Pick<DecisionRecord, 'target' | 'at' | 'algorithm' | 'metric' | 'targetValue'>, current: number, sourceError: string): Promise<DecisionRecord> {
    const { spec } = t;
    const desired = spec.minReplicas;
    let error = sourceError;
    let scaled = false;
    try {
      await spec.actuator.scale(spec.name, desired);
      scaled = true;
      this.#log?.info({ target: spec.name, from: current, to: desired, reason: 'scale_up', limitedBy: ['min_replicas'] }, 'autoscaler: scaled to minReplicas');
    } catch (err) {
      error = `scale to ${desired} failed (${spec.actuator.kind}): ${(err as Error).message}`;
      this.#series.errors.inc({ target: spec.name, stage: 'scale' });
      this.#warnOnce(t, error);
    }
    this.#series.desired.set({ target: spec.name }, desired);
    const record: DecisionRecord = { ...base, reason: 'scale_up', current, desired, scaled, error };
    t.lastChange = record;
    return this.#record(t, record);
  }

  #record(t: TargetRuntime, record: DecisionRecord): DecisionRecord {
    this.#series.decisions.inc({ target: record.target, reason: record.reason });
    t.history.push(record);
    if (t.history.length > this.#historySize) t.history.splice(0, t.history.length - this.#historySize);
    return record;
  }

  /** Logs an error once until it changes or the target recovers: a dead Prometheus must not log every 2 s. */
  #warnOnce(t: TargetRuntime, error: string): void {
    if (t.lastError === error) return;
    t.lastError = error;
    this.#log?.warn({ target: t.spec.name }, `autoscaler: ${error}`);
  }

  #createSeries(): Series {
    const registers = [this.registry];
    const gauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ['target'] as const, registers });
    const series: Series = {
      desired: gauge('switchyard_autoscaler_desired_replicas', 'Replicas the last decision asked for (current when a tick made no decision)'),
      current: gauge('switchyard_autoscaler_current_replicas', 'Replicas the target had at the last tick, as the actuator counts them (asked for, ready or not)'),
      value: gauge('switchyard_autoscaler_metric_value', 'The metric per replica over the window the last decision used (load / current replicas)'),
      targetValue: gauge('switchyard_autoscaler_target_value', 'The per-replica target value'),
      panic: gauge('switchyard_autoscaler_panic', '1 while the target\'s KPA is in panic mode, else 0'),
      decisions: new Counter({
        name: 'switchyard_autoscaler_decisions_total',
        help: 'Ticks by outcome: scale_up, scale_down, steady, within_tolerance, panic_hold, scale_down_delayed, at_min, at_max, no_data, source_error, actuator_error',
        labelNames: ['target', 'reason'] as const,
        registers,
      }),
      errors: new Counter({
        name: 'switchyard_autoscaler_errors_total',
        help: 'Failures by stage: source (metric read), current (actuator count), scale (actuator scale call)',
        labelNames: ['target', 'stage'] as const,
        registers,
      }),
    };
    for (const t of this.#targets) {
      series.targetValue.set({ target: t.spec.name }, t.spec.targetValue);
      series.panic.set({ target: t.spec.name }, 0);
    }
    return series;
  }
}

/**
 * A reading as a sample: an average over the replicas that reported (or, when the source cannot tell, over the
 * actuator's count), or a sum spread over the actuator's count.
 */
export function toSample(reading: MetricReading, current: number, at: number): Sample {
  const replicas = Math.max(1, current);
  if (reading.basis === 'sum') return { at, value: reading.value / replicas, replicas };
  return { at, value: reading.value, replicas: reading.replicas ?? replicas };
}
