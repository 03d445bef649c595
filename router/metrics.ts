import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { EnginePerf, EngineSnapshot, EngineSpec } from '../core/engine.js';
import type { PredictionCheck } from './placement/place.js';

/** Latency buckets in seconds, from a cached short answer to a long generation. */
const latencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface GatewayMetrics {
  readonly requests: Counter<'model' | 'engine' | 'status'>;
  readonly ttft: Histogram<'model'>;
  readonly duration: Histogram<'model'>;
  readonly retries: Counter<'model' | 'reason'>;
  readonly decisions: Counter<'policy' | 'engine' | 'reason'>;
  readonly prefixBlocks: Counter<'model' | 'kind'>;
  readonly rateLimited: Counter<'kind'>;
  readonly rateLimitFallbacks: Counter;
  readonly queueWait: Histogram;
  readonly queueRejected: Counter<'reason'>;
  readonly usageEvents: Counter<'outcome'>;
  /** usageEvents{outcome="recorded"}, bound once: it is counted on every request. */
  readonly usageRecorded: Counter.Internal;
  readonly adapterLoads: Counter<'engine'>;
  readonly adapterUnloads: Counter<'engine'>;
  readonly adapterFailures: Counter<'engine' | 'operation'>;
  readonly adapterLoadSeconds: Histogram;
  readonly coldStartWait: Histogram<'outcome'>;
  readonly engineRestarts: Counter<'engine' | 'reason'>;
  /** Relative error of routing's predictions against what happened (switchyard_routing_prediction_error). */
  observePrediction(check: PredictionCheck): void;
}

/** What the metrics read at scrape time. */
export interface GatewayGauges {
  readonly engines: () => readonly EngineSnapshot[];
  /** Requests waiting in the fair queue, per priority class. */
  readonly queueLength: () => ReadonlyMap<number, number>;
  /** Adapters resident per engine, as this replica last read them. */
  readonly adaptersResident: () => ReadonlyMap<string, number>;
  /** The engine's figures as routing predicts with them (router/placement/calibration.ts). */
  readonly perf: (spec: EngineSpec) => EnginePerf;
}

/** The gateway's own series, `switchyard_` prefixed. Engine gauges read the registry's snapshot at scrape time. */
export function createGatewayMetrics(registry: Registry, gauges: GatewayGauges): GatewayMetrics {
  const { engines } = gauges;
  const engineGauge = (name: string, help: string, value: (e: EngineSnapshot) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['engine'],
      registers: [registry],
      collect() {
        this.reset();
        for (const e of engines()) this.set({ engine: e.spec.id }, value(e));
      },
    });
  engineGauge('switchyard_in_flight_requests', 'Requests proxied to an engine and not yet finished', (e) => e.inFlight);
  engineGauge('switchyard_engine_healthy', '1 when the engine passes health checks and is not ejected, else 0', (e) => (e.healthy ? 1 : 0));
  engineGauge('switchyard_engine_prefill_tokens_per_second', 'Prefill rate routing predicts with, as calibrated from the engine\'s answers', (e) => gauges.perf(e.spec).prefillTokensPerSec);
  engineGauge('switchyard_engine_step_base_ms', 'Time of a decode step without KV, as calibrated from the engine\'s answers', (e) => gauges.perf(e.spec).decodeBaseMs);
  engineGauge('switchyard_engine_step_ms_per_1k_kv_tokens', 'Time a decode step adds per 1,000 KV tokens in the batch, as calibrated', (e) => gauges.perf(e.spec).decodeMsPer1kKvTokens);
  new Gauge({
    name: 'switchyard_queue_length',
    help: 'Requests waiting in the fair queue for an engine to stop being saturated, by priority class',
    labelNames: ['priority'],
    registers: [registry],
    collect() {
      for (const [priority, waiting] of gauges.queueLength()) this.set({ priority: String(priority) }, waiting);
    },
  });
  new Gauge({
    name: 'switchyard_adapters_resident',
    help: 'LoRA adapters resident per engine, as this replica last read the shared residency map',
    labelNames: ['engine'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [engine, n] of gauges.adaptersResident()) this.set({ engine }, n);
    },
  });
  const usageEvents = new Counter({
    name: 'switchyard_usage_events_total',
    help: 'Usage events: recorded by the gateway, stored by the writer, failed (retried) or dropped (lost)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const predictionError = new Histogram({
    name: 'switchyard_routing_prediction_error',
    help: 'Relative error of the TTFT and time per output token routing predicted for the engine it chose: (predicted - observed) / observed',
    labelNames: ['quantity'],
    buckets: [-0.9, -0.75, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2, 4],
    registers: [registry],
  });
  const ttftError = predictionError.labels({ quantity: 'ttft' });
  const tpotError = predictionError.labels({ quantity: 'tpot' });
  return {
    observePrediction: (check) => {
      if (check.ttftMs > 0) ttftError.observe((check.predictedTtftMs - check.ttftMs) / check.ttftMs);
      if (check.tpotMs !== undefined && check.tpotMs > 0) tpotError.observe((check.predictedTpotMs - check.tpotMs) / check.tpotMs);
    },
    usageEvents,
    usageRecorded: usageEvents.labels('recorded'),
    adapterLoads: new Counter({ name: 'switchyard_adapter_loads_total', help: 'LoRA adapters loaded by this gateway\'s controller, per engine', labelNames: ['engine'], registers: [registry] }),
    adapterUnloads: new Counter({ name: 'switchyard_adapter_unloads_total', help: 'LoRA adapters unloaded by this gateway\'s controller, per engine', labelNames: ['engine'], registers: [registry] }),
    adapterFailures: new Counter({
      name: 'switchyard_adapter_failures_total',
      help: 'LoRA adapter loads or unloads that failed (retried with backoff), per engine and operation',
      labelNames: ['engine', 'operation'],
      registers: [registry],
    }),
    adapterLoadSeconds: new Histogram({
      name: 'switchyard_adapter_load_seconds',
      help: 'Time an engine took to load a LoRA adapter',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
    coldStartWait: new Histogram({
      name: 'switchyard_adapter_cold_start_wait_seconds',
      help: 'Time requests for an adapter resident nowhere waited for it to load, by outcome (loaded, timeout, failed)',
      labelNames: ['outcome'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    engineRestarts: new Counter({
      name: 'switchyard_engine_restarts_total',
      help: 'Engine restarts the registry noticed (reason: start_time changed, or health: probes failed then passed); the prefix index forgot the engine\'s blocks',
      labelNames: ['engine', 'reason'],
      registers: [registry],
    }),
    requests: new Counter({
      name: 'switchyard_requests_total',
      help: 'Inference requests by model, engine (none when no engine was chosen) and HTTP status',
      labelNames: ['model', 'engine', 'status'],
      registers: [registry],
    }),
    ttft: new Histogram({
      name: 'switchyard_time_to_first_token_seconds',
      help: 'Gateway-side time from arrival to the first byte of the answer',
      labelNames: ['model'],
      buckets: latencyBuckets,
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'switchyard_request_duration_seconds',
      help: 'Gateway-side time from arrival to the end of the answer',
      labelNames: ['model'],
      buckets: latencyBuckets,
      registers: [registry],
    }),
    retries: new Counter({
      name: 'switchyard_retries_total',
      help: 'Attempts moved to another engine, by the failure that caused it',
      labelNames: ['model', 'reason'],
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'switchyard_routing_decisions_total',
      help: 'Routing decisions by policy, chosen engine and the reason the policy gave',
      labelNames: ['policy', 'engine', 'reason'],
      registers: [registry],
    }),
    prefixBlocks: new Counter({
      name: 'switchyard_prefix_blocks_total',
      help: 'Prompt blocks of served requests (kind=prompt) and how many of them the chosen engine held (kind=matched)',
      labelNames: ['model', 'kind'],
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'switchyard_rate_limited_total',
      help: 'Requests refused with 429 by a TPM/RPM limit, by the kind of limit that refused (requests or tokens)',
      labelNames: ['kind'],
      registers: [registry],
    }),
    rateLimitFallbacks: new Counter({
      name: 'switchyard_rate_limit_fallbacks_total',
      help: 'Limit checks made on this replica\'s local counters (fail-open) or refused (fail-closed) because Redis could not be reached',
      registers: [registry],
    }),
    queueWait: new Histogram({
      name: 'switchyard_queue_wait_seconds',
      help: 'Time requests spent in the fair queue before an engine took them',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    queueRejected: new Counter({
      name: 'switchyard_queue_rejected_total',
      help: 'Requests refused by the fair queue: full (at once) or timeout (still waiting at their deadline)',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}
