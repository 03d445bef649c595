import type { TraceRequest } from './trace.js';

/**
 * What the replayer sends. Open loop: a trace's requests at their own times, whatever the fleet does. Closed loop:
 * users who each send their next request when the last one ends (plus a think time), so a slow engine slows its
 * own arrivals, as it does for real users; open-loop traces never show a hot spot that slows its own arrivals.
 */
export interface Workload {
  /** Requests known at the start, in arrival order: a whole trace, or each user's first request. */
  readonly initial: readonly WorkloadRequest[];
  /**
   * `ended` (a request this workload gave) finished at `atMs`, virtual ms: the same user's next request, with
   * `timestampMs >= atMs`, or undefined when that user is done. Absent for open-loop workloads.
   */
  next?(ended: WorkloadRequest, atMs: number): WorkloadRequest | undefined;
}

export interface WorkloadRequest extends TraceRequest {
  /**
   * The conversation or user the request belongs to, as a gateway sees it in `x-session-id` or the OpenAI `user`
   * field; the replayed router keeps session affinity by it. Undefined for traces (Mooncake has none).
   */
  readonly session?: string;
}

/** A trace replayed open loop, its arrivals `rateScale` times as fast. */
export function openLoop(trace: readonly TraceRequest[], rateScale = 1): Workload {
  if (!(rateScale > 0 && Number.isFinite(rateScale))) throw new RangeError(`rate scale must be a positive number, got ${rateScale}`);
  return { initial: rateScale === 1 ? trace : trace.map((r) => ({ ...r, timestampMs: r.timestampMs / rateScale })) };
}
