import type { EngineSnapshot } from '../../../core/engine.js';
import type { RequestFeatures } from '../types.js';

/**
 * Work queued on each candidate ahead of a new request, in units of the request's own prompt, so that it can be
 * weighed directly against the share of that prompt a candidate would have to compute:
 *
 * - P_e / N when the request's prompt length N is known and every candidate reports pendingPrefillTokens P_e: a
 *   new request on engine e waits for about that much prefill before its own (vLLM schedules chunked prefill
 *   first come, first served), and the prompt's own prefill costs about 1;
 * - inFlight_e otherwise, each request in flight counted as one prompt like this one.
 *
 * Why tokens when available: prompt lengths are heavy-tailed (the Mooncake trace's run from a few hundred tokens to
 * 190K), so two engines with the same number of requests in flight can be seconds of prefill apart.
 */
export function queuedWork(request: RequestFeatures, engines: readonly EngineSnapshot[]): number[] {
  const n = request.promptTokens;
  if (n !== undefined && n > 0 && engines.every((e) => e.pendingPrefillTokens !== undefined)) {
    return engines.map((e) => e.pendingPrefillTokens! / n);
  }
  return engines.map((e) => e.inFlight);
}
