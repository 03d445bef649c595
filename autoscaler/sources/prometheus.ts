/**
 * PromQL against a Prometheus server: an instant query, GET <url>/api/v1/query?query=..., every tick.
 *
 * The result may be an instant vector (one value per series, e.g. `vllm:kv_cache_usage_perc{model_name="llama"}`
 * gives one per engine) or a scalar. `aggregate` says what the values are:
 *   sum (default): their sum is the load over all replicas (per replica: divided by the actuator's count). Right for
 *     per-engine series, and for `sum(...)` queries. Replicas still starting report nothing and add nothing, so the
 *     load does not jump when the actuator adds replicas.
 *   avg: their mean is the per-replica value, multiplied by the actuator's count for the load. Right for `avg(...)`
 *     queries; note the actuator counts replicas not ready yet, so while new replicas start the load reads high.
 *
 * No data: an empty vector (the series do not exist yet, or every engine is gone), or NaN values, is "no data",
 * not 0: read() rejects with code no_data and the loop makes no decision that tick. Reading it as 0 would scale a
 * fleet down to its minimum whenever the metric pipeline breaks. Range vectors (matrix) and strings are errors:
 * wrap a range in an *_over_time function.
 */

import { Agent, request, type Dispatcher } from 'undici';
import { MetricSourceError, snippet, transportError, type MetricReading, type MetricSource } from './source.js';

export type PrometheusAggregate = 'sum' | 'avg';

export const PROMETHEUS_DEFAULTS = Object.freeze({ aggregate: 'sum' as PrometheusAggregate, timeoutMs: 2_000 });

export interface PrometheusSourceOptions {
  /** The server's base URL, e.g. http://prometheus:9090 (a path prefix is kept: http://host/prometheus). */
  readonly url: string;
  readonly query: string;
  readonly aggregate?: PrometheusAggregate;
  /** Per request; also sent as the query's `timeout`. Default 2 s. */
  readonly timeoutMs?: number;
  /** Default: an own agent, closed by close(). */
  readonly dispatcher?: Dispatcher;
}

export function prometheusSource(opts: PrometheusSourceOptions): MetricSource {
  const aggregate = opts.aggregate ?? PROMETHEUS_DEFAULTS.aggregate;
  const timeoutMs = opts.timeoutMs ?? PROMETHEUS_DEFAULTS.timeoutMs;
  if (!(timeoutMs > 0)) throw new RangeError(`prometheus: timeoutMs must be > 0, got ${timeoutMs}`);
  if (opts.query.trim() === '') throw new RangeError('prometheus: query must not be empty');
  const endpoint = queryUrl(opts.url, opts.query, timeoutMs);
  const ownsDispatcher = opts.dispatcher === undefined;
  const dispatcher = opts.dispatcher ?? new Agent({ connections: 2, keepAliveTimeout: 10_000 });
  const what = `prometheus ${new URL(opts.url).origin}`;

  return {
    description: `${what}: ${aggregate} of ${opts.query}`,
    async read(): Promise<MetricReading> {
      let status: number;
      let text: string;
      try {
        const res = await request(endpoint, { method: 'GET', dispatcher, headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
        status = res.statusCode;
        text = await res.body.text();
      } catch (err) {
        throw transportError(what, timeoutMs, err);
      }
      const values = parseQueryResponse(status, text, what);
      const sum = values.reduce((a, b) => a + b, 0);
      const n = values.length;
      const series = `${n} ${n === 1 ? 'value' : 'values'}`;
      return aggregate === 'sum'
        ? { basis: 'sum', value: sum, detail: `${series}, sum ${round(sum)}` }
        : { basis: 'average', value: sum / n, detail: `${series}, mean ${round(sum / n)}` };
    },
    async close() {
      if (ownsDispatcher) await dispatcher.close();
    },
  };
}

/** <base>/api/v1/query?query=...&timeout=...ms */
export function queryUrl(base: string, query: string, timeoutMs: number): string {
  const u = new URL(base);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/api/v1/query`;
  u.search = '';
  u.searchParams.set('query', query);
  u.searchParams.set('timeout', `${Math.max(1, Math.round(timeoutMs))}ms`);
  return u.toString();
}

/**
 * The finite values of an instant query's answer (one per vector series, or the scalar). Throws
 * MetricSourceError: query_error (Prometheus said status "error"), http_status, bad_response (not JSON, not a
 * Prometheus answer, a matrix or string result), no_data (empty vector, only NaN/Inf values).
 */
export function parseQueryResponse(status: number, text: string, what = 'prometheus'): number[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    if (status < 200 || status >= 300) throw new MetricSourceError('http_status', `${what}: HTTP ${status}${text.trim() === '' ? '' : `: ${snippet(text)}`}`);
    throw new MetricSourceError('bad_response', `${what}: the answer is not JSON: ${snippet(text)}`);
  }
  const b = (typeof body === 'object' && body !== null ? body : {}) as { status?: unknown; errorType?: unknown; error?: unknown; data?: unknown };
  if (b.status === 'error') {
    const type = typeof b.errorType === 'string' ? `${b.errorType}: ` : '';
    throw new MetricSourceError('query_error', `${what}: HTTP ${status}: ${type}${typeof b.error === 'string' ? b.error : 'error'}`);
  }
  if (status < 200 || status >= 300) throw new MetricSourceError('http_status', `${what}: HTTP ${status}: ${snippet(text)}`);
  const data = b.data as { resultType?: unknown; result?: unknown } | undefined;
  if (b.status !== 'success' || typeof data !== 'object' || data === null) {
    throw new MetricSourceError('bad_response', `${what}: not a Prometheus query answer (expected {"status":"success","data":...}): ${snippet(text)}`);
  }
  let raw: unknown[];
  switch (data.resultType) {
    case 'vector': {
      if (!Array.isArray(data.result)) throw new MetricSourceError('bad_response', `${what}: vector result is not a list`);
      if (data.result.length === 0) throw new MetricSourceError('no_data', `${what}: the query returned no series`);
      raw = data.result.map((s) => (typeof s === 'object' && s !== null ? (s as { value?: unknown }).value : undefined));
      break;
    }
    case 'scalar':
      raw = [data.result];
      break;
    case 'matrix':
      throw new MetricSourceError('bad_response', `${what}: the query returned a range vector; use an instant vector (e.g. avg_over_time(m[1m]))`);
    default:
      throw new MetricSourceError('bad_response', `${what}: unsupported result type ${JSON.stringify(data.resultType)}`);
  }
  const values: number[] = [];
  for (const pair of raw) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new MetricSourceError('bad_response', `${what}: a sample is not [time, "value"]: ${snippet(JSON.stringify(pair) ?? '')}`);
    const v = typeof pair[1] === 'string' || typeof pair[1] === 'number' ? Number(pair[1]) : NaN;
    if (Number.isFinite(v)) values.push(v);
  }
  if (values.length === 0) throw new MetricSourceError('no_data', `${what}: no finite value in the result (NaN or Inf)`);
  return values;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
