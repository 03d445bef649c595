import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import type { EngineKind, EngineLoad } from '../../core/engine.js';

/**
 * Which of an engine's own metrics feed EngineLoad. All are gauges.
 *
 * vLLM (vllm/v1/metrics/loggers.py): `vllm:num_requests_running`, `vllm:num_requests_waiting`,
 *   `vllm:kv_cache_usage_perc` — a 0..1 fraction despite the name. `vllm:gpu_cache_usage_perc` is the older
 *   name (V0 engine, and V1 releases that exported both while deprecating it); read only when the new one is
 *   absent so the two are never counted together. Series carry `model_name` and, with data parallelism,
 *   `engine` labels.
 * SGLang (python/sglang/srt/metrics/collector.py, with --enable-metrics): `sglang:num_running_reqs`,
 *   `sglang:num_queue_reqs`, `sglang:token_usage` (0..1 fraction of the token pool in use).
 * llama.cpp (tools/server, with --metrics): `llamacpp:requests_processing`, `llamacpp:requests_deferred`,
 *   `llamacpp:kv_cache_usage_ratio`. Current builds no longer export any KV-usage gauge (nor
 *   `llamacpp:kv_cache_tokens`), and `llamacpp:n_tokens_max` is the largest batch ever observed, not a
 *   capacity, so a usage cannot be derived from /metrics alone: kvUsage reads 0 for those builds.
 */
interface KindMetrics {
  readonly running: string;
  readonly waiting: string;
  /** In order of preference; the first one present is used. */
  readonly kvUsage: readonly string[];
}

const METRICS: Readonly<Record<EngineKind, KindMetrics>> = {
  vllm: {
    running: 'vllm:num_requests_running',
    waiting: 'vllm:num_requests_waiting',
    kvUsage: ['vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc'],
  },
  sglang: {
    running: 'sglang:num_running_reqs',
    waiting: 'sglang:num_queue_reqs',
    kvUsage: ['sglang:token_usage'],
  },
  llamacpp: {
    running: 'llamacpp:requests_processing',
    waiting: 'llamacpp:requests_deferred',
    kvUsage: ['llamacpp:kv_cache_usage_ratio'],
  },
};

/**
 * Prometheus' standard process collector series, the engine process's start in seconds since the epoch: vLLM and
 * SGLang have it when they serve prometheus_client's default registry (a multiprocess registry may lack it);
 * llama.cpp never does. Only compared with itself, to notice a restart, so the engine's clock need not agree with ours.
 */
const START_TIME = 'process_start_time_seconds';

const WANTED: Readonly<Record<EngineKind, ReadonlySet<string>>> = {
  vllm: wantedNames(METRICS.vllm),
  sglang: wantedNames(METRICS.sglang),
  llamacpp: wantedNames(METRICS.llamacpp),
};

function wantedNames(m: KindMetrics): ReadonlySet<string> {
  return new Set([m.running, m.waiting, ...m.kvUsage, START_TIME]);
}

/** Sum, largest and number of finite samples seen for one metric name. */
interface Accumulated {
  sum: number;
  max: number;
  count: number;
}

/**
 * Reads an engine's /metrics text into EngineLoad.
 *
 * running and waiting are summed over all series of the metric (several `model_name`, or one series per
 * data-parallel rank). kvUsage is the mean over its series: each rank has its own KV pool of the same size,
 * so the mean is the engine's usage, where a sum would exceed 1. Values are clamped to [0, 1].
 *
 * A metric that is missing, or whose samples are all NaN/Inf, reads as 0. A text with none of the kind's
 * metrics throws: it is not this kind of engine, or metrics are disabled, and the caller must count a failed
 * scrape rather than an idle engine. The process start time alone does not make a load.
 *
 * startedAt is the newest start among the start-time series (one per process that serves them): a restarted
 * process becomes the newest, so any restart changes it. Absent when the engine does not export it.
 */
export function parseEngineLoad(kind: EngineKind, text: string, now: number): EngineLoad {
  const metrics = METRICS[kind];
  const found = new Map<string, Accumulated>();
  for (const family of parsePrometheusTextFormat(keepSamples(text, WANTED[kind]))) {
    let acc = found.get(family.name);
    if (acc === undefined) {
      acc = { sum: 0, max: -Infinity, count: 0 };
      found.set(family.name, acc);
    }
    for (const sample of family.metrics) {
      const value = sample.value === undefined ? NaN : Number(sample.value);
      if (Number.isFinite(value)) {
        acc.sum += value;
        acc.max = Math.max(acc.max, value);
        acc.count++;
      }
    }
  }
  const started = found.get(START_TIME);
  if (found.size === (started === undefined ? 0 : 1)) {
    const expected = [...WANTED[kind]].filter((name) => name !== START_TIME);
    throw new Error(`no ${kind} load metrics in /metrics text (expected one of ${expected.join(', ')})`);
  }
  let kvUsage = 0;
  for (const name of metrics.kvUsage) {
    const acc = found.get(name);
    if (acc !== undefined) {
      kvUsage = acc.count === 0 ? 0 : Math.min(1, Math.max(0, acc.sum / acc.count));
      break;
    }
  }
  return {
    running: Math.max(0, found.get(metrics.running)?.sum ?? 0),
    waiting: Math.max(0, found.get(metrics.waiting)?.sum ?? 0),
    kvUsage,
    scrapedAt: now,
    ...(started !== undefined && started.count > 0 ? { startedAt: started.max } : {}),
  };
}

/**
 * Keeps only the sample lines of the wanted metrics, newline-terminated. Why not hand the whole text to the
 * parser: a vLLM /metrics page is mostly histogram buckets, and the parser builds strings character by
 * character, so filtering first keeps a scrape of many engines cheap. It also isolates us from two parser
 * quirks: a malformed line anywhere (e.g. an empty `# HELP name`) throws for the whole text, and the last
 * sample is dropped when the text does not end with a newline.
 */
export function keepSamples(text: string, wanted: ReadonlySet<string>): string {
  let kept = '';
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    const line = text.slice(start, end).trim();
    start = end + 1;
    if (line.length === 0 || line.charCodeAt(0) === 35 /* # */) continue;
    if (wanted.has(sampleName(line))) kept += line + '\n';
  }
  return kept;
}

/** The metric name of a sample line: everything before the label set or the value. */
function sampleName(line: string): string {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c === 123 /* { */ || c === 32 /* space */ || c === 9 /* tab */) return line.slice(0, i);
  }
  return line;
}
