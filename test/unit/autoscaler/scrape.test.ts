import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startSim, type RunningSim } from '../../../engine-sim/server.js';
import { metricsUrl, parseScrapedLoad, scrapeSource, SIDECAR_METRICS } from '../../../autoscaler/sources/scrape.js';
import { MetricSourceError, type MetricSource } from '../../../autoscaler/sources/source.js';
import { startTextServer, vllmText, type TextServer } from './text-server.js';

const SGLANG = `# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen"} 5.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="qwen"} 2.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="qwen"} 0.7
`;

const LLAMACPP = `# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 4
llamacpp:kv_cache_usage_ratio 0.25
`;

/** A sidecar's page: its normalised series, then the engine's own text (which says something else). */
function sidecarText(kv: number, waiting: number, running: number, up = 1): string {
  return [
    `# TYPE ${SIDECAR_METRICS.running} gauge`,
    `${SIDECAR_METRICS.running}{engine="e1"} ${running}`,
    `# TYPE ${SIDECAR_METRICS.waiting} gauge`,
    `${SIDECAR_METRICS.waiting}{engine="e1"} ${waiting}`,
    `# TYPE ${SIDECAR_METRICS.kvUsage} gauge`,
    `${SIDECAR_METRICS.kvUsage}{engine="e1"} ${kv}`,
    `${SIDECAR_METRICS.up}{engine="e1"} ${up}`,
    vllmText(0.99, 99, 99),
  ].join('\n');
}

let server: TextServer | undefined;
let source: MetricSource | undefined;
let sim: RunningSim | undefined;

afterEach(async () => {
  await source?.close();
  await server?.close();
  await sim?.close();
  source = server = sim = undefined;
});

describe('parseScrapedLoad', () => {
  it.each([
    ['vLLM', vllmText(0.42, 3, 7), 'auto', { kvUsage: 0.42, waiting: 3, running: 7 }],
    ['SGLang', SGLANG, 'auto', { kvUsage: 0.7, waiting: 2, running: 5 }],
    ['llama.cpp', LLAMACPP, 'auto', { kvUsage: 0.25, waiting: 4, running: 1 }],
    ['a sidecar, preferred over the engine text it appends', sidecarText(0.3, 1, 2), 'auto', { kvUsage: 0.3, waiting: 1, running: 2 }],
    ["a sidecar's page read as the engine's own names when told so", sidecarText(0.3, 1, 2), 'vllm', { kvUsage: 0.99, waiting: 99, running: 99 }],
  ] as const)('%s', (_name, text, kind, load) => {
    expect(parseScrapedLoad(text, kind, 5)).toEqual({ ...load, scrapedAt: 5 });
  });

  it.each([
    ['no engine metrics at all', 'process_cpu_seconds_total 12\n', 'auto', /no engine load metrics/],
    ['the wrong kind named', vllmText(0.4, 1, 1), 'sglang', /no sglang load metrics/],
    ['a sidecar whose engine is down', sidecarText(0, 0, 0, 0), 'auto', /engine down/],
  ] as const)('rejects %s', (_name, text, kind, message) => {
    let err: unknown;
    try {
      parseScrapedLoad(text, kind, 0);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MetricSourceError);
    expect((err as MetricSourceError).code).toBe('bad_response');
    expect((err as Error).message).toMatch(message);
  });
});

describe('metricsUrl', () => {
  it.each([
    ['http://10.0.0.7:8000', 'http://10.0.0.7:8000/metrics'],
    ['http://10.0.0.7:8000/', 'http://10.0.0.7:8000/metrics'],
    ['http://10.0.0.7:9000/stats/prometheus', 'http://10.0.0.7:9000/stats/prometheus'],
  ])('%s -> %s', (url, expected) => expect(metricsUrl(url)).toBe(expected));
});

describe('scrape source against HTTP servers', () => {
  it('averages the metric per engine over the engines that answered', async () => {
    server = await startTextServer({
      '/a/metrics': { body: vllmText(0.2, 1, 4) },
      '/b/metrics': { body: vllmText(0.4, 5, 4) },
      '/c/metrics': { body: sidecarText(0.9, 0, 7) },
    });
    const urls = ['a', 'b', 'c'].map((p) => `${server!.url}/${p}/metrics`);
    source = scrapeSource({ metric: 'kv_cache_usage', urls });
    const r = await source.read();
    expect(r).toMatchObject({ basis: 'average', replicas: 3, detail: '3 of 3 engines answered' });
    expect(r.value).toBeCloseTo(0.5);
    await source.close();
    source = scrapeSource({ metric: 'waiting_requests', urls });
    expect(await source.read()).toMatchObject({ value: 2, replicas: 3 });
    await source.close();
    source = scrapeSource({ metric: 'running_requests', urls });
    expect(await source.read()).toMatchObject({ value: 5, replicas: 3 });
  });

  it('leaves out engines that fail (status, no metrics, down sidecar, timeout, refused) and names them', async () => {
    server = await startTextServer({
      '/ok/metrics': { body: vllmText(0.6, 0, 0) },
      '/err/metrics': { status: 500, body: 'boom' },
      '/empty/metrics': { body: 'up 1\n' },
      '/down/metrics': { body: sidecarText(0, 0, 0, 0) },
      '/slow/metrics': { body: vllmText(1, 0, 0), delayMs: 1_000 },
    });
    const refused = await startTextServer();
    const refusedUrl = `${refused.url}/metrics`;
    await refused.close();
    source = scrapeSource({
      metric: 'kv_cache_usage',
      urls: [...['ok', 'err', 'empty', 'down', 'slow'].map((p) => `${server!.url}/${p}/metrics`), refusedUrl],
      timeoutMs: 200,
    });
    const r = await source.read();
    expect(r.value).toBeCloseTo(0.6);
    expect(r.replicas).toBe(1);
    expect(r.detail).toMatch(/^1 of 6 engines answered \(/);
    expect(r.detail).toContain('HTTP 500: boom');
    expect(r.detail).toContain('; 2 more)');
  });

  it('rejects when no engine answers, with the first failure\'s code', async () => {
    server = await startTextServer({ '/metrics': { status: 503, body: '' } });
    source = scrapeSource({ metric: 'kv_cache_usage', urls: [server.url] });
    await expect(source.read()).rejects.toMatchObject({ name: 'MetricSourceError', code: 'http_status', message: expect.stringMatching(/no engine answered of 1 \(.*HTTP 503/) });
  });

  it('rejects with no_targets when there is nothing to scrape', async () => {
    source = scrapeSource({ metric: 'kv_cache_usage', urls: () => [] });
    await expect(source.read()).rejects.toMatchObject({ code: 'no_targets' });
  });

  it('calls a URL function every read: replicas come and go', async () => {
    server = await startTextServer({ '/a/metrics': { body: vllmText(0.2, 0, 0) }, '/b/metrics': { body: vllmText(0.8, 0, 0) } });
    let urls = [`${server.url}/a/metrics`];
    source = scrapeSource({ metric: 'kv_cache_usage', urls: () => urls });
    expect(await source.read()).toMatchObject({ value: 0.2, replicas: 1 });
    urls = [`${server.url}/a/metrics`, `${server.url}/b/metrics`];
    const r = await source.read();
    expect(r.replicas).toBe(2);
    expect(r.value).toBeCloseTo(0.5);
  });
});

describe('scrape source against a simulated engine', () => {
  it('reads idle, then a running request, from a real sim', async () => {
    sim = await startSim({ model: 'sim-model', port: 0, timeScale: 1, outputLenMean: 4_000 });
    source = scrapeSource({ metric: 'running_requests', urls: [sim.url] });
    expect(await source.read()).toMatchObject({ value: 0, replicas: 1, detail: '1 of 1 engines answered' });

    const abort = new AbortController();
    const pending = request(`${sim.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'sim-model', prompt: 'hello '.repeat(200), max_tokens: 4_000, stream: true }),
      signal: abort.signal,
    }).then((res) => res.body.dump().catch(() => {}), () => {});
    let running = 0;
    for (let i = 0; i < 100 && running < 1; i++) {
      running = (await source.read()).value;
      if (running < 1) await new Promise((r) => setTimeout(r, 20));
    }
    expect(running).toBe(1);
    const kv = scrapeSource({ metric: 'kv_cache_usage', urls: [sim.url] });
    expect((await kv.read()).value).toBeGreaterThan(0);
    await kv.close();
    abort.abort();
    await pending;
  });
});
