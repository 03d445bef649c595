import type { EnginePerf, EngineSnapshot } from '../../core/engine.js';

/**
 * What placing one request on one engine costs in time, from a model of a continuous-batching engine (vLLM V1,
 * SGLang: chunked prefill first come first served, every decode step reads the whole batch's KV). The model is
 * engine-sim's timing model reduced to what the gateway knows: step(kv) = decodeBaseMs + decodeMsPer1kKvTokens x
 * kv / 1000, prefill at prefillTokensPerSec. All times in ms.
 */

/** The request as the cost model sees it. */
export interface RequestShape {
  /** The whole prompt, tokens. */
  readonly promptTokens: number;
  /** The part of it the engine would have to compute: the prompt less the prefix it holds. */
  readonly uncachedTokens: number;
  /** Output tokens expected (router/placement/output-length.ts). */
  readonly outputTokens: number;
}

/** What the gateway knows of the work on an engine (EngineSnapshot's exact counts, 0 where not tracked). */
export interface QueuedLoad {
  readonly inFlight: number;
  readonly pendingPrefillTokens: number;
  readonly prefillHeadAgeMs: number;
  readonly kvTokens: number;
  readonly outputTokens: number;
  /** Prompt tokens per second sent to the engine to prefill lately (EngineSnapshot.recentPrefillRate). */
  readonly recentPrefillRate: number;
}

export interface LatencyPrediction {
  /** Queued prefill ahead of the request, then its own uncached prompt, then the step that samples its first token. */
  readonly ttftMs: number;
  /** Its tokens after the first, each one step of the batch it joins, with its own KV in that batch. */
  readonly decodeMs: number;
  /** Time it adds to the requests already on the engine: its prefill stalls their steps, its KV lengthens them. */
  readonly externalityMs: number;
}

/**
 * The engine's load as the model reads it. Where the gateway does not track the KV and output in flight (the
 * replayer's in-flight-only mode), each request in flight is taken to be like `like`, the request being placed.
 */
export function queuedLoad(engine: EngineSnapshot, like?: RequestShape): QueuedLoad {
  return {
    inFlight: engine.inFlight,
    pendingPrefillTokens: engine.pendingPrefillTokens ?? 0,
    prefillHeadAgeMs: engine.prefillHeadAgeMs ?? 0,
    kvTokens: engine.inFlightKvTokens ?? (like === undefined ? 0 : engine.inFlight * (like.promptTokens + like.outputTokens / 2)),
    outputTokens: engine.inFlightOutputTokens ?? (like === undefined ? 0 : engine.inFlight * like.outputTokens),
    recentPrefillRate: engine.recentPrefillRate ?? 0,
  };
}

/**
 * Past this share of its time prefilling, an engine's decode is not predicted slower still: the share is measured
 * over seconds, and an engine that busy is kept from more prefill by the TTFT term already.
 */
export const MAX_PREFILL_SHARE = 0.9;

/**
 * The share of an engine's time that prefill takes: prefill arriving at `recentPrefillRate` over the rate it
 * computes at. Decode steps share the engine with it (chunked prefill puts both in one step), so each output token
 * takes a step's time over (1 - share) of wall time.
 */
export function prefillShare(perf: EnginePerf, load: QueuedLoad): number {
  return Math.min(MAX_PREFILL_SHARE, load.recentPrefillRate / perf.prefillTokensPerSec);
}

/**
 * Prefill still queued on the engine: what the gateway sent less what the engine has computed of its head since
 * the last first token. Without this, a long prompt's tokens count in full until its first token, and an engine
 * seconds into a 100K-token prompt looks as far from free as when it started.
 */
export function queuedPrefill(perf: EnginePerf, load: QueuedLoad): number {
  return Math.max(0, load.pendingPrefillTokens - (perf.prefillTokensPerSec * load.prefillHeadAgeMs) / 1000);
}

export function stepMs(perf: EnginePerf, kvTokens: number): number {
  return perf.decodeBaseMs + (perf.decodeMsPer1kKvTokens * kvTokens) / 1000;
}

export function prefillMs(perf: EnginePerf, tokens: number): number {
  return (1000 * tokens) / perf.prefillTokensPerSec;
}

/**
 * The three times placing `request` on an engine with `load` and `perf` costs:
 *
 * - TTFT: prefill is scheduled first come first served, so the request waits for the prefill queued ahead of it
 *   (the gateway's exact pending-prefill count, less what the engine has done of it: queuedPrefill), then computes
 *   its uncached tokens, and samples its first token at the end of a step that reads the batch's KV.
 * - Decode: each later token is one step of the batch it joins: the KV in flight plus its own mean context (its
 *   prompt and half its output), stretched by the share of the engine's time that other requests' prefill takes
 *   meanwhile (prefillShare). This is the term that keeps a shared prefix from becoming a hot spot: a cached
 *   prompt prefills in no time, but on a crowded engine every one of its tokens waits for a longer step.
 * - Externality: what the others on the engine lose. While it prefills, each request in flight waits for its
 *   chunks (chunked prefill shares their steps); while it decodes, its KV lengthens every step they share with it,
 *   for the tokens they still have to generate (half their expected output, on average over their lives), capped
 *   by its own output length. A scheduler that ignores this favours whoever arrives, at everyone else's expense.
 */
export function predictLatency(perf: EnginePerf, load: QueuedLoad, request: RequestShape): LatencyPrediction {
  const ownKv = request.promptTokens + request.outputTokens / 2;
  const ttftMs = prefillMs(perf, queuedPrefill(perf, load) + request.uncachedTokens) + stepMs(perf, load.kvTokens + request.promptTokens);
  const decodeMs = (Math.max(0, request.outputTokens - 1) * stepMs(perf, load.kvTokens + ownKv)) / (1 - prefillShare(perf, load));
  const sharedSteps = Math.min(load.inFlight * request.outputTokens, load.outputTokens / 2);
  const externalityMs =
    load.inFlight * prefillMs(perf, request.uncachedTokens) + ((perf.decodeMsPer1kKvTokens * ownKv) / 1000) * sharedSteps;
  return { ttftMs, decodeMs, externalityMs };
}
