/**
 * One set of metric names for every engine kind: the sidecar's GET /metrics serves `switchyard_engine_*` series
 * computed from the engine's own /metrics, then the engine's text unchanged.
 *
 *   switchyard_engine_running                          gauge    requests in the running batch
 *   switchyard_engine_waiting                          gauge    requests queued
 *   switchyard_engine_kv_cache_usage                   gauge    0..1
 *   switchyard_engine_prefix_cache_hit_tokens_total    counter  prompt tokens served from the prefix cache
 *   switchyard_engine_prompt_tokens_total              counter  prompt (prefill) tokens
 *   switchyard_engine_generation_tokens_total          counter  generated tokens
 *   switchyard_engine_time_to_first_token_seconds      histogram (buckets when every series has the same ones,
 *                                                      else only the +Inf one, _sum and _count)
 *
 * running, waiting and kv_cache_usage are router/engines/engine-metrics.ts's parseEngineLoad (the same reading
 * routing uses). The rest come from these names, summed over all the engine's series (model_name, data-parallel
 * `engine`, SGLang's cache_source, ...):
 *
 *   vLLM / sim   vllm:prefix_cache_hits_total (older V1: vllm:gpu_prefix_cache_hits_total), vllm:prompt_tokens_total,
 *                vllm:generation_tokens_total, vllm:time_to_first_token_seconds
 *   SGLang       sglang:cached_tokens_total, sglang:prompt_tokens_total, sglang:generation_tokens_total,
 *                sglang:time_to_first_token_seconds
 *   llama.cpp    llamacpp:prompt_tokens_total, llamacpp:tokens_predicted_total; it has no prefix-hit counter and
 *                no TTFT histogram.
 *
 * A series the engine does not export is left out rather than written as 0: an absent series is "unknown", a 0
 * would be a claim. Counters are passed through as the engine counts them, so they reset when the engine
 * restarts, which Prometheus' rate() handles. The sidecar adds switchyard_engine_up (1 when the engine's /metrics
 * was read) and switchyard_engine_restarts_total (restarts by the supervisor).
 */

import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import type { EngineKind, EngineLoad } from '../core/engine.js';
import { keepSamples, parseEngineLoad } from '../router/engines/engine-metrics.js';

export interface TtftHistogram {
  /** Cumulative counts by upper bound, ascending, ending with +Inf; undefined when the series' buckets differ. */
  readonly buckets: readonly (readonly [le: number, count: number])[] | undefined;
  readonly sum: number;
  readonly count: number;
}

/** An engine's metrics in the sidecar's names; a field is undefined when the engine does not export its source. */
export interface NormalisedEngineMetrics {
  /** running, waiting, kvUsage; undefined when the text has none of the kind's load gauges. */
  readonly load: EngineLoad | undefined;
  readonly prefixCacheHitTokens: number | undefined;
  readonly promptTokens: number | undefined;
  readonly generationTokens: number | undefined;
  readonly timeToFirstToken: TtftHistogram | undefined;
}

interface KindCounters {
  /** Each in order of preference: the first name present is used. */
  readonly prefixCacheHitTokens: readonly string[];
  readonly promptTokens: readonly string[];
  readonly generationTokens: readonly string[];
  /** Histogram base name, without _bucket/_sum/_count. */
  readonly ttft: string | undefined;
}

const COUNTERS: Readonly<Record<EngineKind, KindCounters>> = {
  vllm: {
    prefixCacheHitTokens: ['vllm:prefix_cache_hits_total', 'vllm:gpu_prefix_cache_hits_total'],
    promptTokens: ['vllm:prompt_tokens_total'],
    generationTokens: ['vllm:generation_tokens_total'],
    ttft: 'vllm:time_to_first_token_seconds',
  },
  sglang: {
    prefixCacheHitTokens: ['sglang:cached_tokens_total'],
    promptTokens: ['sglang:prompt_tokens_total'],
    generationTokens: ['sglang:generation_tokens_total'],
    ttft: 'sglang:time_to_first_token_seconds',
  },
  llamacpp: {
    prefixCacheHitTokens: [],
    promptTokens: ['llamacpp:prompt_tokens_total'],
    generationTokens: ['llamacpp:tokens_predicted_total'],
    ttft: undefined,
  },
};

const WANTED: Readonly<Record<EngineKind, ReadonlySet<string>>> = {
  vllm: wantedNames(COUNTERS.vllm),
  sglang: wantedNames(COUNTERS.sglang),
  llamacpp: wantedNames(COUNTERS.llamacpp),
};

function wantedNames(c: KindCounters): ReadonlySet<string> {
  const names = [...c.prefixCacheHitTokens, ...c.promptTokens, ...c.generationTokens];
  if (c.ttft !== undefined) names.push(`${c.ttft}_bucket`, `${c.ttft}_sum`, `${c.ttft}_count`);
  return new Set(names);
}

type Sample = parsePrometheusTextFormat.Sample;

/** Reads an engine's /metrics text into the sidecar's names. Never throws on a text of another kind: all undefined. */
export function normaliseEngineMetrics(kind: EngineKind, text: string, now: number = Date.now()): NormalisedEngineMetrics {
  let load: EngineLoad | undefined;
  try {
    load = parseEngineLoad(kind, text, now);
  } catch {
    load = undefined;
  }
  const families = new Map<string, Sample[]>();
  for (const family of parsePrometheusTextFormat(keepSamples(text, WANTED[kind]))) {
    const list = families.get(family.name);
    if (list === undefined) families.set(family.name, [...family.metrics]);
    else list.push(...family.metrics);
  }
  const counters = COUNTERS[kind];
  return {
    load,
    prefixCacheHitTokens: firstSum(families, counters.prefixCacheHitTokens),
    promptTokens: firstSum(families, counters.promptTokens),
    generationTokens: firstSum(families, counters.generationTokens),
    timeToFirstToken: counters.ttft === undefined ? undefined : histogram(families, counters.ttft),
  };
}

/** The sum over the series of the first name present, finite samples only. */
function firstSum(families: ReadonlyMap<string, Sample[]>, names: readonly string[]): number | undefined {
  for (const name of names) {
    const samples = families.get(name);
    if (samples !== undefined) return sumOf(samples);
  }
  return undefined;
}

function sumOf(samples: readonly Sample[]): number {
  let sum = 0;
  for (const s of samples) {
    const v = Number(s.value);
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

/**
 * All series of one histogram merged: _sum and _count summed; buckets summed by bound when every series has the
 * same bounds (one engine's series do: same code, same buckets). Otherwise a bound missing from one series would
 * undercount it, so only _sum and _count are kept.
 */
function histogram(families: ReadonlyMap<string, Sample[]>, base: string): TtftHistogram | undefined {
  const countSamples = families.get(`${base}_count`);
  if (countSamples === undefined) return undefined;
  const sum = sumOf(families.get(`${base}_sum`) ?? []);
  const count = sumOf(countSamples);
  const bySeries = new Map<string, Map<number, number>>();
  for (const s of families.get(`${base}_bucket`) ?? []) {
    const { le, ...rest } = s.labels ?? {};
    const bound = le === undefined ? NaN : parseBound(le);
    const value = Number(s.value);
    if (Number.isNaN(bound) || !Number.isFinite(value)) continue;
    const key = seriesKey(rest);
    let series = bySeries.get(key);
    if (series === undefined) bySeries.set(key, (series = new Map()));
    series.set(bound, value);
  }
  return { buckets: mergeBuckets([...bySeries.values()]), sum, count };
}

function mergeBuckets(series: readonly Map<number, number>[]): [number, number][] | undefined {
  const first = series[0];
  if (first === undefined || !first.has(Infinity)) return undefined;
  const bounds = [...first.keys()].sort((a, b) => a - b);
  for (const s of series) {
    if (s.size !== bounds.length || bounds.some((b) => !s.has(b))) return undefined;
  }
  return bounds.map((b) => [b, series.reduce((acc, s) => acc + s.get(b)!, 0)]);
}

function parseBound(le: string): number {
  if (le === '+Inf' || le === 'Inf' || le === '+inf') return Infinity;
  const n = Number(le);
  return le.trim() === '' ? NaN : n;
}

function seriesKey(labels: Record<string, string>): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',');
}

/** What the sidecar knows besides the engine's text. */
export interface SidecarMetricsInput {
  /** The engine's metrics, undefined when its /metrics could not be read. */
  readonly engine: NormalisedEngineMetrics | undefined;
  /** Engine restarts by the supervisor since the sidecar started. */
  readonly restarts: number;
}

/** The sidecar's series in Prometheus text format (0.0.4), newline-terminated. */
export function formatSidecarMetrics(input: SidecarMetricsInput): string {
  const out: string[] = [];
  const series = (name: string, type: 'gauge' | 'counter', help: string, value: number | undefined): void => {
    if (value === undefined) return;
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${formatValue(value)}`);
  };
  const m = input.engine;
  series('switchyard_engine_up', 'gauge', "1 when the sidecar read the engine's /metrics, else 0.", m === undefined ? 0 : 1);
  series('switchyard_engine_restarts_total', 'counter', 'Engine processes restarted by the sidecar after they exited.', input.restarts);
  if (m !== undefined) {
    series('switchyard_engine_running', 'gauge', 'Requests in the engine running batch.', m.load?.running);
    series('switchyard_engine_waiting', 'gauge', 'Requests waiting in the engine queue.', m.load?.waiting);
    series('switchyard_engine_kv_cache_usage', 'gauge', 'KV-cache usage, 0..1.', m.load?.kvUsage);
    series('switchyard_engine_prefix_cache_hit_tokens_total', 'counter', 'Prompt tokens served from the prefix cache.', m.prefixCacheHitTokens);
    series('switchyard_engine_prompt_tokens_total', 'counter', 'Prompt (prefill) tokens processed.', m.promptTokens);
    series('switchyard_engine_generation_tokens_total', 'counter', 'Generation tokens produced.', m.generationTokens);
    const ttft = m.timeToFirstToken;
    if (ttft !== undefined) {
      const name = 'switchyard_engine_time_to_first_token_seconds';
      out.push(`# HELP ${name} Time to first token in seconds.`, `# TYPE ${name} histogram`);
      // Without mergeable buckets, the +Inf one alone (it is the count), so the histogram stays well-formed.
      for (const [le, count] of ttft.buckets ?? [[Infinity, ttft.count]]) out.push(`${name}_bucket{le="${le === Infinity ? '+Inf' : formatValue(le)}"} ${formatValue(count)}`);
      out.push(`${name}_sum ${formatValue(ttft.sum)}`, `${name}_count ${formatValue(ttft.count)}`);
    }
  }
  return out.join('\n') + '\n';
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}
