import type { FastifyBaseLogger } from 'fastify';
import type { Registry } from 'prom-client';
import { ConfigError, kvBlockSize, type Config } from '../../core/config.js';
import type { EngineRegistry } from '../engines/registry.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PrefixTracker } from '../prefix.js';
import { createPipeline, type RoutingPipeline } from '../routing/pipeline.js';
import type { Calibration } from './calibration.js';
import { IndexAudit } from './index-audit.js';
import { OutputLengths } from './output-length.js';
import { Placement } from './place.js';

export interface GatewayPlacementOptions {
  readonly config: Config;
  readonly registry: EngineRegistry;
  /** Absent when kvcache.enabled is false: no index to record in or audit. */
  readonly prefix: PrefixTracker | undefined;
  /** Made first: the metrics' gauges read it. */
  readonly calibration: Calibration;
  readonly metrics: GatewayMetrics;
  readonly metricsRegistry: Registry;
  readonly log: FastifyBaseLogger;
}

export interface GatewayPlacement {
  readonly placement: Placement;
  /** The prefix index checked against the engines' cached tokens; undefined without an index. */
  readonly audit: IndexAudit | undefined;
  /** The engine left the fleet: what was learnt of it goes (back under the same id, it may be other hardware). */
  forgetEngine(id: string): void;
}

/** The placement step as the gateway runs it: over its registry and prefix index, learning into its calibration. */
export function createGatewayPlacement(opts: GatewayPlacementOptions): GatewayPlacement {
  const { config, registry, prefix, calibration, metrics } = opts;
  const blockTokens = kvBlockSize(config.kvcache);
  const audit =
    prefix === undefined
      ? undefined
      : new IndexAudit({
          registry: opts.metricsRegistry,
          log: opts.log,
          blockTokens,
          kvEvents: (id) => registry.snapshot().some((e) => e.spec.id === id && e.spec.kvEventsEndpoint !== undefined),
        });
  const placement = new Placement({
    pipeline: routingPipeline(config, calibration, prefix),
    fleet: registry,
    index: prefix,
    calibration,
    outputs: new OutputLengths(),
    blockTokens,
    onPrediction: (check) => metrics.observePrediction(check),
    audit,
  });
  return {
    placement,
    audit,
    forgetEngine(id) {
      audit?.forget(id);
      calibration.forget(id);
    },
  };
}

function routingPipeline(config: Config, calibration: Calibration, prefix: PrefixTracker | undefined): RoutingPipeline {
  try {
    return createPipeline(config.routing, { perf: (engine) => calibration.perf(engine.spec), cacheFill: (engine) => prefix?.fill(engine.spec.id) ?? 0 });
  } catch (err) {
    throw new ConfigError('routing', [`routing: ${(err as Error).message}`]);
  }
}
