import { afterEach, describe, expect, it } from 'vitest';
import { parseQueryResponse, prometheusSource, queryUrl } from '../../../autoscaler/sources/prometheus.js';
import type { MetricSource, MetricSourceErrorCode } from '../../../autoscaler/sources/source.js';
import { startTextServer, type TextServer } from './text-server.js';

const series = (value: string, engine: string) => ({ metric: { __name__: 'vllm:kv_cache_usage_perc', engine }, value: [1735689600.123, value] });
const ok = (resultType: string, result: unknown) => JSON.stringify({ status: 'success', data: { resultType, result } });

const VECTOR = ok('vector', [series('0.2', 'a'), series('0.4', 'b'), series('0.9', 'c')]);

let server: TextServer | undefined;
let source: MetricSource | undefined;

afterEach(async () => {
  await source?.close();
  await server?.close();
  source = server = undefined;
});

describe('parseQueryResponse', () => {
  it.each([
    ['a vector: one value per series', 200, VECTOR, [0.2, 0.4, 0.9]],
    ['a scalar', 200, ok('scalar', [1735689600, '2.5']), [2.5]],
    ['a vector with NaN and +Inf among finite values: the finite ones', 200, ok('vector', [series('NaN', 'a'), series('0.5', 'b'), series('+Inf', 'c')]), [0.5]],
    ['warnings are ignored', 200, JSON.stringify({ status: 'success', warnings: ['x'], data: { resultType: 'vector', result: [series('1', 'a')] } }), [1]],
  ] as const)('%s', (_name, status, body, values) => {
    expect(parseQueryResponse(status, body)).toEqual(values);
  });

  it.each([
    ['an empty vector is no data, not 0', 200, ok('vector', []), 'no_data', /no series/],
    ['only NaN is no data', 200, ok('vector', [series('NaN', 'a')]), 'no_data', /no finite value/],
    ['a NaN scalar is no data', 200, ok('scalar', [1, 'NaN']), 'no_data', /no finite value/],
    [
      'a query error, with its type and message',
      400,
      JSON.stringify({ status: 'error', errorType: 'bad_data', error: 'invalid parameter "query": 1:5: parse error: unexpected "}"' }),
      'query_error',
      /HTTP 400: bad_data: invalid parameter "query"/,
    ],
    ['an error status from a proxy, not JSON', 503, '<html>Service Unavailable</html>', 'http_status', /HTTP 503: <html>Service Unavailable/],
    ['a 200 that is not JSON', 200, 'vllm:kv_cache_usage_perc 0.5', 'bad_response', /not JSON/],
    ['JSON that is not a query answer', 200, '{"hello":"world"}', 'bad_response', /not a Prometheus query answer/],
    ['a range vector', 200, ok('matrix', [{ metric: {}, values: [[1, '1']] }]), 'bad_response', /range vector/],
    ['a string result', 200, ok('string', [1, 'x']), 'bad_response', /unsupported result type "string"/],
    ['a malformed sample', 200, ok('vector', [{ metric: {}, value: '1' }]), 'bad_response', /not \[time, "value"\]/],
  ] as const)('rejects %s', (_name, status, body, code: MetricSourceErrorCode, message) => {
    let err: { code?: string; message?: string } | undefined;
    try {
      parseQueryResponse(status, body);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.code).toBe(code);
    expect(err?.message).toMatch(message);
  });
});

describe('queryUrl', () => {
  it('encodes the query, keeps a path prefix, and passes the timeout', () => {
    const u = new URL(queryUrl('http://prom.example:9090/prometheus/', 'sum(vllm:num_requests_waiting{model_name="llama"})', 1_500));
    expect(u.pathname).toBe('/prometheus/api/v1/query');
    expect(u.searchParams.get('query')).toBe('sum(vllm:num_requests_waiting{model_name="llama"})');
    expect(u.searchParams.get('timeout')).toBe('1500ms');
  });
});

describe('prometheus source against an HTTP server', () => {
  it('runs the instant query and sums the series by default', async () => {
    server = await startTextServer({ '/api/v1/query': { body: VECTOR, contentType: 'application/json' } });
    source = prometheusSource({ url: server.url, query: 'vllm:kv_cache_usage_perc{model_name="llama"}' });
    const r = await source.read();
    expect(r).toMatchObject({ basis: 'sum', detail: '3 values, sum 1.5' });
    expect(r.value).toBeCloseTo(1.5);
    expect(r.replicas).toBeUndefined();
    expect(server.requests[0]!.searchParams.get('query')).toBe('vllm:kv_cache_usage_perc{model_name="llama"}');
    expect(source.description).toBe(`prometheus ${server.url}: sum of vllm:kv_cache_usage_perc{model_name="llama"}`);
  });

  it('averages with aggregate: avg', async () => {
    server = await startTextServer({ '/api/v1/query': { body: VECTOR } });
    source = prometheusSource({ url: server.url, query: 'q', aggregate: 'avg' });
    const r = await source.read();
    expect(r.basis).toBe('average');
    expect(r.value).toBeCloseTo(0.5);
  });

  it('answers per query: a scalar expression', async () => {
    server = await startTextServer({
      '/api/v1/query': (_req, url) => ({ body: url.searchParams.get('query') === 'scalar(sum(up))' ? ok('scalar', [1, '4']) : ok('vector', []) }),
    });
    source = prometheusSource({ url: server.url, query: 'scalar(sum(up))' });
    expect(await source.read()).toMatchObject({ basis: 'sum', value: 4 });
  });

  it.each([
    ['an empty result', { body: ok('vector', []) }, 'no_data'],
    ['a bad query', { status: 400, body: JSON.stringify({ status: 'error', errorType: 'bad_data', error: 'parse error' }) }, 'query_error'],
    ['a proxy error', { status: 502, body: 'Bad Gateway' }, 'http_status'],
    ['garbage', { body: '{{{' }, 'bad_response'],
    ['a slow server', { body: VECTOR, delayMs: 1_000 }, 'timeout'],
  ] as const)('rejects %s', async (_name, route, code) => {
    server = await startTextServer({ '/api/v1/query': { ...route } });
    source = prometheusSource({ url: server.url, query: 'q', timeoutMs: 200 });
    await expect(source.read()).rejects.toMatchObject({ name: 'MetricSourceError', code });
  });

  it('rejects with unreachable when nothing listens', async () => {
    const gone = await startTextServer();
    const url = gone.url;
    await gone.close();
    source = prometheusSource({ url, query: 'q' });
    await expect(source.read()).rejects.toMatchObject({ code: 'unreachable', message: expect.stringContaining('ECONNREFUSED') });
  });
});
