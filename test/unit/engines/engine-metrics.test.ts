import { describe, expect, it } from 'vitest';
import { parseEngineLoad } from '../../../router/engines/engine-metrics.js';

const MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"';

// vLLM V1 with two data-parallel engines (label `engine`), as served by prometheus_client.
const VLLM_V1 = `# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 13521.0
python_gc_objects_collected_total{generation="1"} 2961.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.146304e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
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
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-lora",waiting_lora_adapters=""} 1.7475e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",${MODEL}} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",${MODEL}} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02",${MODEL}} 488.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",${MODEL}} 1021.0
vllm:time_to_first_token_seconds_count{engine="0",${MODEL}} 1021.0
vllm:time_to_first_token_seconds_sum{engine="0",${MODEL}} 41.73
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.001",${MODEL}} 0.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",${MODEL}} 998.0
vllm:time_to_first_token_seconds_count{engine="1",${MODEL}} 998.0
vllm:time_to_first_token_seconds_sum{engine="1",${MODEL}} 39.02
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",num_gpu_blocks="27863"} 1.0
`;

// vLLM V0: the older KV gauge name, request counters with their _created series.
const VLLM_V0 = `# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{${MODEL}} 5.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{${MODEL}} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{${MODEL}} 7.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{${MODEL}} 0.913
# HELP vllm:cpu_cache_usage_perc CPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:cpu_cache_usage_perc gauge
vllm:cpu_cache_usage_perc{${MODEL}} 0.25
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",${MODEL}} 311.0
vllm:request_success_total{finished_reason="length",${MODEL}} 12.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{finished_reason="stop",${MODEL}} 1.7474e+09
`;

// SGLang (--enable-metrics), two models served behind one metrics page.
const SGLANG = `# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 12.0
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct-AWQ"} 3.0
# HELP sglang:num_used_tokens The number of used tokens.
# TYPE sglang:num_used_tokens gauge
sglang:num_used_tokens{model_name="Qwen/Qwen2.5-7B-Instruct"} 141273.0
sglang:num_used_tokens{model_name="Qwen/Qwen2.5-7B-Instruct-AWQ"} 20011.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.6
sglang:token_usage{model_name="Qwen/Qwen2.5-7B-Instruct-AWQ"} 0.2
# HELP sglang:gen_throughput The generation throughput (token/s).
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{model_name="Qwen/Qwen2.5-7B-Instruct"} 812.4
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 5.0
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct-AWQ"} 1.0
# HELP sglang:cache_hit_rate The prefix cache hit rate.
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.61
# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="Qwen/Qwen2.5-7B-Instruct"} 9.871e+06
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="Qwen/Qwen2.5-7B-Instruct"} 811.0
sglang:time_to_first_token_seconds_bucket{le="0.5",model_name="Qwen/Qwen2.5-7B-Instruct"} 1402.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="Qwen/Qwen2.5-7B-Instruct"} 1530.0
sglang:time_to_first_token_seconds_sum{model_name="Qwen/Qwen2.5-7B-Instruct"} 377.2
sglang:time_to_first_token_seconds_count{model_name="Qwen/Qwen2.5-7B-Instruct"} 1530.0
`;

// llama.cpp server --metrics, builds that still export the KV gauges (no labels at all).
const LLAMACPP_WITH_KV = `# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 33065
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 235.743
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 7801
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 140.259
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.234
# HELP llamacpp:kv_cache_tokens KV-cache tokens.
# TYPE llamacpp:kv_cache_tokens gauge
llamacpp:kv_cache_tokens 1917
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
`;

// Current llama.cpp builds: no KV gauge; n_tokens_max is a high-water mark, not a capacity.
const LLAMACPP_CURRENT = `# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 96641
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 23381
# HELP llamacpp:n_tokens_max Largest observed n_tokens.
# TYPE llamacpp:n_tokens_max counter
llamacpp:n_tokens_max 42094
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 4
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode counter
llamacpp:n_busy_slots_per_decode 1.73
`;

describe('parseEngineLoad', () => {
  it('reads vLLM V1: sums running and waiting over engines, averages KV usage', () => {
    const load = parseEngineLoad('vllm', VLLM_V1, 1234);
    expect(load.running).toBe(7);
    expect(load.waiting).toBe(2);
    expect(load.kvUsage).toBeCloseTo(0.5, 12);
    expect(load.scrapedAt).toBe(1234);
  });

  it('reads vLLM V0 through the older gpu_cache_usage_perc name', () => {
    expect(parseEngineLoad('vllm', VLLM_V0, 1)).toEqual({ running: 5, waiting: 7, kvUsage: 0.913, scrapedAt: 1 });
  });

  it('prefers kv_cache_usage_perc when a release exports both names', () => {
    const both = `${VLLM_V1}# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. DEPRECATED
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",${MODEL}} 0.99
vllm:gpu_cache_usage_perc{engine="1",${MODEL}} 0.99
`;
    expect(parseEngineLoad('vllm', both, 1).kvUsage).toBeCloseTo(0.5, 12);
  });

  it('reads SGLang over several model series', () => {
    const load = parseEngineLoad('sglang', SGLANG, 1);
    expect(load.running).toBe(15);
    expect(load.waiting).toBe(6);
    expect(load.kvUsage).toBeCloseTo(0.4, 12);
  });

  it('reads llama.cpp with its KV usage ratio', () => {
    expect(parseEngineLoad('llamacpp', LLAMACPP_WITH_KV, 1)).toEqual({ running: 2, waiting: 1, kvUsage: 0.234, scrapedAt: 1 });
  });

  it('reads current llama.cpp builds without a KV gauge as 0 KV usage, not n_tokens_max', () => {
    expect(parseEngineLoad('llamacpp', LLAMACPP_CURRENT, 1)).toEqual({ running: 4, waiting: 0, kvUsage: 0, scrapedAt: 1 });
  });

  it('reads a missing metric as 0 when the others are present', () => {
    const onlyWaiting = 'vllm:num_requests_waiting{engine="0"} 3\n';
    expect(parseEngineLoad('vllm', onlyWaiting, 1)).toEqual({ running: 0, waiting: 3, kvUsage: 0, scrapedAt: 1 });
  });

  it('reads NaN samples as 0 and clamps KV usage to 1', () => {
    const text = 'vllm:num_requests_running NaN\nvllm:num_requests_waiting +Inf\nvllm:kv_cache_usage_perc 1.2\n';
    expect(parseEngineLoad('vllm', text, 1)).toEqual({ running: 0, waiting: 0, kvUsage: 1, scrapedAt: 1 });
  });

  it('keeps the last sample when the text has no trailing newline', () => {
    const text = 'llamacpp:requests_processing 2\nllamacpp:requests_deferred 5';
    expect(parseEngineLoad('llamacpp', text, 1).waiting).toBe(5);
  });

  it('ignores malformed lines of metrics it does not read', () => {
    const text = `# HELP python_info \n# TYPE\nbroken{label= 1\n${VLLM_V0}`;
    expect(parseEngineLoad('vllm', text, 1).running).toBe(5);
  });

  it('accepts CRLF line endings', () => {
    expect(parseEngineLoad('sglang', SGLANG.replaceAll('\n', '\r\n'), 1).running).toBe(15);
  });

  it('throws when the text has none of the kind’s metrics', () => {
    expect(() => parseEngineLoad('sglang', VLLM_V1, 1)).toThrow(/no sglang load metrics/);
    expect(() => parseEngineLoad('vllm', '', 1)).toThrow(/no vllm load metrics/);
    expect(() => parseEngineLoad('llamacpp', '# HELP llamacpp:requests_processing x\n', 1)).toThrow(/no llamacpp load metrics/);
  });

  it('reads the process start time, the newest of several series, and leaves it out when absent', () => {
    const start = '# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.74750263283e+09\n';
    expect(parseEngineLoad('vllm', start + VLLM_V1, 1).startedAt).toBe(1747502632.83);
    expect(parseEngineLoad('sglang', SGLANG + 'process_start_time_seconds{pid="7"} 100.5\nprocess_start_time_seconds{pid="9"} 200.25\n', 1).startedAt).toBe(200.25);
    expect(parseEngineLoad('vllm', VLLM_V1, 1)).not.toHaveProperty('startedAt');
    expect(parseEngineLoad('vllm', VLLM_V1 + 'process_start_time_seconds NaN\n', 1)).not.toHaveProperty('startedAt');
  });

  it('does not take a start time alone for an engine’s load', () => {
    expect(() => parseEngineLoad('llamacpp', 'process_start_time_seconds 1.7e9\n', 1)).toThrow(/no llamacpp load metrics in \/metrics text \(expected one of llamacpp:requests_processing, llamacpp:requests_deferred, llamacpp:kv_cache_usage_ratio\)/);
  });

  it('throws on a malformed sample line of a metric it reads', () => {
    expect(() => parseEngineLoad('vllm', 'vllm:num_requests_running{engine=0} 3\n', 1)).toThrow(/invalid line/);
  });
});
