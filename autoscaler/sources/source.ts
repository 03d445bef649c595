/**
 * Where a scaling target's metric comes from: the engines' own /metrics (scrape.ts) or a Prometheus server
 * (prometheus.ts). A source reads one value per tick; the loop turns it into a Sample (algorithm.ts).
 */

/** The metrics the scrape source reads from engines; `promql` is any expression, for the Prometheus source. */
export type MetricName = 'kv_cache_usage' | 'waiting_requests' | 'running_requests' | 'promql';

/** One reading. */
export interface MetricReading {
  /**
   * What `value` is: `average` per replica (over `replicas` when the source knows how many reported, else over the
   * actuator's count), or the `sum` over all replicas.
   */
  readonly basis: 'average' | 'sum';
  readonly value: number;
  /** Replicas that reported, when the source can tell (a scrape can, a PromQL result cannot). */
  readonly replicas?: number | undefined;
  /** A line for /explain, e.g. "3 of 4 engines answered (http://10.0.0.7:8000/metrics: timeout)". */
  readonly detail: string;
}

export interface MetricSource {
  /** For logs and /explain, e.g. "scrape of 3 URLs", "prometheus http://prom:9090". */
  readonly description: string;
  /** Rejects with MetricSourceError; code `no_data` means "nothing to decide on", not a failure of the source. */
  read(): Promise<MetricReading>;
  close(): Promise<void>;
}

export type MetricSourceErrorCode =
  /** The source answered, with nothing to read (an empty PromQL result, NaN). The tick makes no decision. */
  | 'no_data'
  /** Connection refused, DNS, reset. */
  | 'unreachable'
  | 'timeout'
  /** An HTTP status other than 2xx. */
  | 'http_status'
  /** A body that is not what was expected (not JSON, not a Prometheus answer, no engine metrics in it). */
  | 'bad_response'
  /** Prometheus answered status "error" (a bad query, a timeout on its side). */
  | 'query_error'
  /** Nothing to read from: no URLs configured or discovered. */
  | 'no_targets';

export class MetricSourceError extends Error {
  readonly code: MetricSourceErrorCode;
  constructor(code: MetricSourceErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'MetricSourceError';
    this.code = code;
  }
}

/** Turns an undici/fetch failure into a MetricSourceError naming what was asked. */
export function transportError(what: string, timeoutMs: number, err: unknown): MetricSourceError {
  const e = err as { name?: string; code?: string; message?: string } | undefined;
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return new MetricSourceError('timeout', `${what}: no answer within ${timeoutMs} ms`, { cause: err });
  }
  return new MetricSourceError('unreachable', `${what}: ${e?.code ?? e?.message ?? String(err)}`, { cause: err });
}

/** The first `max` characters of a body, for error messages. */
export function snippet(text: string, max = 200): string {
  const t = text.trim().replace(/\s+/g, ' ');
  return t.length <= max ? t : `${t.slice(0, max)}...`;
}
