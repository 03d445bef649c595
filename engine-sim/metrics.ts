/**
 * vLLM's Prometheus metrics (current V1 names, buckets and help texts) for one simulated engine. Each sim has its
 * own Registry because several run in one process in dev mode and every one must expose only its own series.
 *
 * Gauges and token counters are read from the timing model at scrape time, so serving a request costs nothing
 * here beyond the latency histograms. Latencies are in engine (virtual) seconds: a sim at time-scale 50 reports
 * what the simulated GPU would, not the shortened wall-clock time.
 */

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TimingModel } from './timing-model.js';

export type FinishedReason = 'stop' | 'length' | 'abort';

export interface SimMetrics {
  readonly registry: Registry;
  observeTimeToFirstToken(seconds: number): void;
  observeInterTokenLatency(seconds: number): void;
  observeE2eLatency(seconds: number): void;
  countFinished(reason: FinishedReason): void;
}

// vLLM's bucket boundaries, so histogram quantiles computed from the sim and from vLLM are comparable.
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0];
const ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0];

export interface MetricsSources {
  readonly modelName: string;
  readonly timing: TimingModel;
  readonly maxLoras: number;
}

export function createSimMetrics({ modelName, timing, maxLoras }: MetricsSources): SimMetrics {
  const registry = new Registry();
  const labels = { model_name: modelName };
  const labelNames = ['model_name'] as const;

  const gauge = (name: string, help: string, read: () => number): void => {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.set(labels, read());
      },
    });
  };
  gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', () => timing.numRunning);
  gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', () => timing.numWaiting);
  gauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', () => timing.kvUsage);

  // prometheus_client's process collector series, as vLLM serves it: unlabelled, with sub-second precision. Each sim
  // is one simulated engine process, started (with an empty cache) when it is created, even when several share a
  // Node process in dev mode; the gateway reads a change of this value as a restart.
  const startedAt = Date.now() / 1000;
  new Gauge({
    name: 'process_start_time_seconds',
    help: 'Start time of the process since unix epoch in seconds.',
    registers: [registry],
  }).set(startedAt);

  // Counters mirror the model's running totals: each scrape adds what accrued since the previous one.
  const counter = (name: string, help: string, read: () => number): void => {
    let reported = 0;
    const metric = new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const total = read();
        if (total > reported) this.inc(labels, total - reported);
        reported = total;
      },
    });
    metric.inc(labels, 0);
  };
  const totals = timing.counters;
  counter('vllm:prefix_cache_queries_total', 'Prefix cache queries, in terms of number of queried tokens.', () => totals.prefixQueryTokens);
  counter('vllm:prefix_cache_hits_total', 'Prefix cache hits, in terms of number of cached tokens.', () => totals.prefixHitTokens);
  counter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.', () => totals.promptTokens);
  counter('vllm:generation_tokens_total', 'Number of generation tokens processed.', () => totals.generationTokens);
  counter('vllm:num_preemptions_total', 'Cumulative number of preemption from the engine.', () => totals.preemptions);

  const success = new Counter({
    name: 'vllm:request_success_total',
    help: 'Count of successfully processed requests.',
    labelNames: ['model_name', 'finished_reason'],
    registers: [registry],
  });
  const finishedReasons: FinishedReason[] = ['stop', 'length', 'abort'];
  const successByReason = new Map(finishedReasons.map((reason) => [reason, success.labels({ ...labels, finished_reason: reason })]));
  for (const child of successByReason.values()) child.inc(0);

  const histogram = (name: string, help: string, buckets: number[]) => {
    const metric = new Histogram({ name, help, buckets, labelNames, registers: [registry] });
    metric.zero(labels);
    return metric.labels(labels);
  };
  const ttft = histogram('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', TTFT_BUCKETS);
  const itl = histogram('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', ITL_BUCKETS);
  const e2e = histogram('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', E2E_BUCKETS);

  // As vLLM: one series per combination of adapter lists seen, valued with the time it was last current, so a
  // reader takes the series with the newest timestamp. Old combinations are kept, as vLLM keeps them.
  new Gauge({
    name: 'vllm:lora_requests_info',
    help: 'Running stats on lora requests.',
    labelNames: ['model_name', 'max_lora', 'running_lora_adapters', 'waiting_lora_adapters'],
    registers: [registry],
    collect() {
      this.setToCurrentTime({
        ...labels,
        max_lora: String(maxLoras),
        running_lora_adapters: timing.runningAdapters().join(','),
        waiting_lora_adapters: timing.waitingAdapters().join(','),
      });
    },
  });

  return {
    registry,
    observeTimeToFirstToken: (seconds) => ttft.observe(seconds),
    observeInterTokenLatency: (seconds) => itl.observe(seconds),
    observeE2eLatency: (seconds) => e2e.observe(seconds),
    countFinished: (reason) => successByReason.get(reason)!.inc(),
  };
}
