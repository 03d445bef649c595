import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect, it } from 'vitest';
import { formatSidecarMetrics, normaliseEngineMetrics } from '../../../engine-sidecar/metrics.js';

const MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"';

// vLLM V1, two data-parallel ranks (label `engine`), as prometheus_client serves it (_created series included).
const VLLM = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",${MODEL}} 3.0
vllm:num_requests_running{engine="1",${MODEL}} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",${MODEL}} 2.0
vllm:num_requests_waiting{engine="1",${MODEL}} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",${MODEL}} 0.42
vllm:kv_cache_usage_perc{engine="1",${MODEL}} 0.58
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",${MODEL}} 1.284e+06
vllm:prefix_cache_queries_total{engine="1",${MODEL}} 1.193e+06
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",${MODEL}} 800000.0
vllm:prefix_cache_hits_total{engine="1",${MODEL}} 700000.0
# HELP vllm:prefix_cache_hits_created Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_created gauge
vllm:prefix_cache_hits_created{engine="0",${MODEL}} 1.7474e+09
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",${MODEL}} 2.0e+06
vllm:prompt_tokens_total{engine="1",${MODEL}} 1.5e+06
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",${MODEL}} 31000.0
vllm:generation_tokens_total{engine="1",${MODEL}} 29000.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",${MODEL}} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02",${MODEL}} 488.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",${MODEL}} 1021.0
vllm:time_to_first_token_seconds_count{engine="0",${MODEL}} 1021.0
vllm:time_to_first_token_seconds_sum{engine="0",${MODEL}} 41.73
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.005",${MODEL}} 10.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.02",${MODEL}} 500.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",${MODEL}} 998.0
vllm:time_to_first_token_seconds_count{engine="1",${MODEL}} 998.0
vllm:time_to_first_token_seconds_sum{engine="1",${MODEL}} 39.02
`;

// vLLM V1 releases before the rename: gpu_prefix_cache_* counters, older KV gauge.
const VLLM_OLD_NAMES = `vllm:num_requests_running{${MODEL}} 1.0
vllm:num_requests_waiting{${MODEL}} 0.0
vllm:gpu_cache_usage_perc{${MODEL}} 0.25
vllm:gpu_prefix_cache_queries_total{${MODEL}} 5000.0
vllm:gpu_prefix_cache_hits_total{${MODEL}} 1200.0
vllm:prompt_tokens_total{${MODEL}} 5000.0
vllm:generation_tokens_total{${MODEL}} 700.0
`;

// SGLang with --enable-metrics: cached tokens by cache_source, TTFT with is_streaming, no trailing newline.
const SGLANG = `# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 12.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 5.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.6
# HELP sglang:cache_hit_rate The prefix cache hit rate.
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.61
# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 9.871e+06
# HELP sglang:generation_tokens_total Number of generation tokens processed.
# TYPE sglang:generation_tokens_total counter
sglang:generation_tokens_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 1.25e+06
# HELP sglang:cached_tokens_total Number of cached prompt tokens.
# TYPE sglang:cached_tokens_total counter
sglang:cached_tokens_total{cache_source="device",model_name="Qwen/Qwen2.5-7B-Instruct"} 6.0e+06
sglang:cached_tokens_total{cache_source="host",model_name="Qwen/Qwen2.5-7B-Instruct"} 1.0e+05
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{is_streaming="true",le="0.1",model_name="Qwen/Qwen2.5-7B-Instruct"} 811.0
sglang:time_to_first_token_seconds_bucket{is_streaming="true",le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 1530.0
sglang:time_to_first_token_seconds_sum{is_streaming="true",model_name="Qwen/Qwen2.5-7B-Instruct"} 377.2
sglang:time_to_first_token_seconds_count{is_streaming="true",model_name="Qwen/Qwen2.5-7B-Instruct"} 1530.0
sglang:time_to_first_token_seconds_bucket{is_streaming="false",le="0.5",model_name="Qwen/Qwen2.5-7B-Instruct"} 20.0
sglang:time_to_first_token_seconds_bucket{is_streaming="false",le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 30.0
sglang:time_to_first_token_seconds_sum{is_streaming="false",model_name="Qwen/Qwen2.5-7B-Instruct"} 12.5
sglang:time_to_first_token_seconds_count{is_streaming="false",model_name="Qwen/Qwen2.5-7B-Instruct"} 30.0`;

// llama.cpp server --metrics (no labels; no prefix-hit counter, no TTFT histogram).
const LLAMACPP = `# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 33065
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 7801
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.234
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
`;

/** Parses the sidecar's text and returns name -> samples, to check it is valid Prometheus text. */
function families(text: string): Map<string, parsePrometheusTextFormat.MetricFamily> {
  return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
}

function gauge(text: string, name: string): number | undefined {
  const f = families(text).get(name);
  return f === undefined ? undefined : Number(f.metrics[0]!.value);
}

describe('normaliseEngineMetrics', () => {
  it('sums vLLM counters over data-parallel ranks and merges the TTFT histogram by bucket', () => {
    const m = normaliseEngineMetrics('vllm', VLLM, 1000);
    expect(m.load).toEqual({ running: 7, waiting: 2, kvUsage: 0.5, scrapedAt: 1000 });
    expect(m.prefixCacheHitTokens).toBe(1_500_000);
    expect(m.promptTokens).toBe(3_500_000);
    expect(m.generationTokens).toBe(60_000);
    expect(m.timeToFirstToken).toEqual({
      buckets: [
        [0.005, 22],
        [0.02, 988],
        [Infinity, 2019],
      ],
      sum: 41.73 + 39.02,
      count: 2019,
    });
  });

  it('reads the older vLLM names when the current ones are absent', () => {
    const m = normaliseEngineMetrics('vllm', VLLM_OLD_NAMES);
    expect(m.load?.kvUsage).toBe(0.25);
    expect(m.prefixCacheHitTokens).toBe(1200);
    expect(m.promptTokens).toBe(5000);
    expect(m.timeToFirstToken).toBeUndefined();
  });

  it('maps SGLang names, summing cached tokens over cache sources; different buckets keep only sum and count', () => {
    const m = normaliseEngineMetrics('sglang', SGLANG);
    expect(m.load).toMatchObject({ running: 12, waiting: 5, kvUsage: 0.6 });
    expect(m.prefixCacheHitTokens).toBe(6_100_000);
    expect(m.promptTokens).toBe(9_871_000);
    expect(m.generationTokens).toBe(1_250_000);
    expect(m.timeToFirstToken).toEqual({ buckets: undefined, sum: 377.2 + 12.5, count: 1560 });
  });

  it('maps llama.cpp names and leaves out what it does not export', () => {
    const m = normaliseEngineMetrics('llamacpp', LLAMACPP);
    expect(m.load).toMatchObject({ running: 2, waiting: 1, kvUsage: 0.234 });
    expect(m.promptTokens).toBe(33065);
    expect(m.generationTokens).toBe(7801);
    expect(m.prefixCacheHitTokens).toBeUndefined();
    expect(m.timeToFirstToken).toBeUndefined();
  });

  it('reads nothing from another kind of engine rather than throwing', () => {
    const m = normaliseEngineMetrics('sglang', VLLM);
    expect(m).toEqual({ load: undefined, prefixCacheHitTokens: undefined, promptTokens: undefined, generationTokens: undefined, timeToFirstToken: undefined });
  });
});

describe('formatSidecarMetrics', () => {
  it('writes switchyard_engine_* series that Prometheus text parsers read back', () => {
    const text = formatSidecarMetrics({ engine: normaliseEngineMetrics('vllm', VLLM), restarts: 2 });
    const f = families(text);
    expect(gauge(text, 'switchyard_engine_up')).toBe(1);
    expect(gauge(text, 'switchyard_engine_restarts_total')).toBe(2);
    expect(gauge(text, 'switchyard_engine_running')).toBe(7);
    expect(gauge(text, 'switchyard_engine_waiting')).toBe(2);
    expect(gauge(text, 'switchyard_engine_kv_cache_usage')).toBe(0.5);
    expect(gauge(text, 'switchyard_engine_prefix_cache_hit_tokens_total')).toBe(1_500_000);
    expect(gauge(text, 'switchyard_engine_prompt_tokens_total')).toBe(3_500_000);
    expect(gauge(text, 'switchyard_engine_generation_tokens_total')).toBe(60_000);
    expect(f.get('switchyard_engine_prompt_tokens_total')!.type).toBe('COUNTER');
    const ttft = f.get('switchyard_engine_time_to_first_token_seconds')!;
    expect(ttft.type).toBe('HISTOGRAM');
    expect(ttft.metrics[0]).toMatchObject({ buckets: { '0.005': '22', '0.02': '988', '+Inf': '2019' }, count: '2019' });
    expect(Number(ttft.metrics[0]!.sum)).toBeCloseTo(80.75, 6);
  });

  it('writes only the +Inf bucket when the series could not be merged', () => {
    const text = formatSidecarMetrics({ engine: normaliseEngineMetrics('sglang', SGLANG), restarts: 0 });
    expect(families(text).get('switchyard_engine_time_to_first_token_seconds')!.metrics[0]).toMatchObject({ buckets: { '+Inf': '1560' }, count: '1560' });
  });

  it('omits series the engine does not export (llama.cpp) and says up 0 when the engine could not be read', () => {
    const llama = families(formatSidecarMetrics({ engine: normaliseEngineMetrics('llamacpp', LLAMACPP), restarts: 0 }));
    expect(llama.has('switchyard_engine_prompt_tokens_total')).toBe(true);
    expect(llama.has('switchyard_engine_prefix_cache_hit_tokens_total')).toBe(false);
    expect(llama.has('switchyard_engine_time_to_first_token_seconds')).toBe(false);

    const down = formatSidecarMetrics({ engine: undefined, restarts: 3 });
    expect([...families(down).keys()].sort()).toEqual(['switchyard_engine_restarts_total', 'switchyard_engine_up']);
    expect(gauge(down, 'switchyard_engine_up')).toBe(0);
  });
});
