/**
 * From config to running parts: each target's metric source, algorithm and actuator.
 */

import type { Actuator } from './actuator.js';
import { createActuator as defaultCreateActuator, type ActuatorConfig } from './actuators/index.js';
import { resolveApaOptions } from './apa.js';
import type { AlgorithmSpec, ScalingTarget } from './autoscaler.js';
import type { AutoscalerConfig, TargetConfig } from './config.js';
import { resolveKpaOptions } from './kpa.js';
import { prometheusSource } from './sources/prometheus.js';
import { scrapeSource } from './sources/scrape.js';
import type { MetricSource } from './sources/source.js';

export interface BuildTargetsOptions {
  /** Default autoscaler/actuators' createActuator; tests pass fakes. */
  readonly createActuator?: (cfg: ActuatorConfig, target: TargetConfig) => Actuator;
}

/** Every target of the config; on a failure, closes what it had built and rethrows. */
export function buildTargets(cfg: AutoscalerConfig, opts: BuildTargetsOptions = {}): ScalingTarget[] {
  const create = opts.createActuator ?? ((a: ActuatorConfig) => defaultCreateActuator(a));
  const built: ScalingTarget[] = [];
  try {
    for (const t of cfg.targets) {
      const actuator = create(t.actuator, t);
      let source: MetricSource;
      try {
        source = buildSource(t, actuator);
      } catch (err) {
        void actuator.close();
        throw err;
      }
      built.push({
        name: t.name,
        metric: t.metric,
        targetValue: t.targetValue,
        minReplicas: t.minReplicas,
        maxReplicas: t.maxReplicas,
        algorithm: algorithmSpec(t),
        source,
        actuator,
      });
    }
  } catch (err) {
    for (const b of built) {
      void b.source.close();
      void b.actuator.close();
    }
    throw err;
  }
  return built;
}

export function algorithmSpec(t: Pick<TargetConfig, 'algorithm' | 'kpa' | 'apa'>): AlgorithmSpec {
  return t.algorithm === 'kpa' ? { kind: 'kpa', options: resolveKpaOptions(t.kpa) } : { kind: 'apa', options: resolveApaOptions(t.apa) };
}

/**
 * The target's metric source. A scrape with no URLs reads the replicas an actuator lists (the local actuator's
 * replicas(), each engine's URL + /metrics).
 */
export function buildSource(t: TargetConfig, actuator: Actuator): MetricSource {
  const s = t.source;
  if (s.type === 'prometheus') return prometheusSource({ url: s.url, query: s.query, aggregate: s.aggregate, timeoutMs: s.timeoutMs });
  if (t.metric === 'promql') throw new Error(`target ${t.name}: metric promql needs a prometheus source`);
  let urls: readonly string[] | (() => readonly string[]) = s.urls;
  if (s.urls.length === 0) {
    const lister = replicaLister(actuator);
    if (lister === undefined) {
      throw new Error(`target ${t.name}: source.urls is empty and the ${actuator.kind} actuator does not list its replicas; list the engines' /metrics URLs, or use a prometheus source`);
    }
    urls = lister;
  }
  return scrapeSource({ metric: t.metric, urls, engineKind: s.engineKind, timeoutMs: s.timeoutMs });
}

interface ListsReplicas {
  replicas(): readonly { readonly url: string }[];
}

function replicaLister(actuator: Actuator): (() => string[]) | undefined {
  const a = actuator as Partial<ListsReplicas>;
  if (typeof a.replicas !== 'function') return undefined;
  return () => (actuator as unknown as ListsReplicas).replicas().map((r) => r.url);
}
