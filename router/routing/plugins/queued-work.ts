import type { EngineSnapshot } from '../../../core/engine.js';
import type { RequestFeatures } from '../types.js';

/**
 * A request in flight weighs like this many tokens of queued prefill, on top of its own pending prefill: after its
 * first token it still holds a batch slot and KV, and its decode steps run between a newcomer's prefill chunks.
 * Without it, an engine holding a prefix that every request shares, whose prefills are short once cached, would
 * take every request while its decode batch (and everyone's time per output token) grew without bound. Measured
 * (bench/replay/README.md): 500 still lets one engine run 1.7x the mean of requests on the shared-system-prompt
 * trace; 2,000 begins to cost the Mooncake trace's p99 TTFT, whose long prompts are what queues; 1,000 keeps both.
 */
export const IN_FLIGHT_TOKENS = 1000;

/**
 * Work queued on each candidate ahead of a new request, in units of the request's own prompt, so that it can be
 * weighed directly against the share of that prompt a candidate would have to compute:
 *
 * - (P_e + IN_FLIGHT_TOKENS x inFlight_e) / N when the request's prompt length N is known and every candidate
 *   reports pendingPrefillTokens P_e: a new request on engine e waits for about that much prefill before its own
 *   (vLLM schedules chunked prefill first come, first served), and the prompt's own prefill costs about 1;
 * - inFlight_e otherwise, each request in flight counted as one prompt like this one.
 *
 * Why tokens when available: prompt lengths are heavy-tailed (the Mooncake trace's run from a few hundred tokens to
 * 190K), so two engines with the same number of requests in flight can be seconds of prefill apart, and a long
 * prompt should go where the least prefill is queued whatever the number of short requests decoding there.
 */
export function queuedWork(request: RequestFeatures, engines: readonly EngineSnapshot[]): number[] {
  const n = request.promptTokens;
  if (n !== undefined && n > 0 && engines.every((e) => e.pendingPrefillTokens !== undefined)) {
    return engines.map((e) => (e.pendingPrefillTokens! + IN_FLIGHT_TOKENS * e.inFlight) / n);
  }
  return engines.map((e) => e.inFlight);
}
