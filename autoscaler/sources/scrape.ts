/**
 * Direct scrape: GET every engine's (or sidecar's) /metrics each tick and average the metric per engine.
 *
 * Engines' own names are read with parseEngineLoad (router/engines/engine-metrics.ts: vLLM, SGLang, llama.cpp), the
 * same reading routing uses; a sidecar's page is read by its normalised names (engine-sidecar/metrics.ts):
 * switchyard_engine_running, switchyard_engine_waiting, switchyard_engine_kv_cache_usage, and
 * switchyard_engine_up 0 means the sidecar could not read its engine. A sidecar also appends the engine's own text;
 * `engineKind: auto` (the default) prefers the sidecar's names when present.
 *
 * An engine that does not answer, answers non-2xx, or serves no load metrics is left out of the average (and
 * named in the reading's detail): it is not a ready replica. When none answers, read() rejects and the tick
 * makes no decision.
 */

import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { Agent, request, type Dispatcher } from 'undici';
import type { EngineKind, EngineLoad } from '../../core/engine.js';
import { keepSamples, parseEngineLoad } from '../../router/engines/engine-metrics.js';
import { MetricSourceError, snippet, transportError, type MetricReading, type MetricSource } from './source.js';

export type ScrapedMetric = 'kv_cache_usage' | 'waiting_requests' | 'running_requests';
export type ScrapeEngineKind = 'auto' | 'sidecar' | EngineKind;

/** The sidecar's normalised load gauges. */
export const SIDECAR_METRICS = Object.freeze({
  running: 'switchyard_engine_running',
  waiting: 'switchyard_engine_waiting',
  kvUsage: 'switchyard_engine_kv_cache_usage',
  up: 'switchyard_engine_up',
});

const SIDECAR_WANTED: ReadonlySet<string> = new Set(Object.values(SIDECAR_METRICS));
const SIDECAR_PRESENT = /^switchyard_engine_(running|waiting|kv_cache_usage|up)[\s{]/m;

export const SCRAPE_DEFAULTS = Object.freeze({ timeoutMs: 1_000 });

export interface ScrapeSourceOptions {
  readonly metric: ScrapedMetric;
  /**
   * Engines' or sidecars' /metrics URLs; a base URL without a path gets /metrics. A function is called every tick
   * (replicas that come and go, e.g. the local actuator's).
   */
  readonly urls: readonly string[] | (() => readonly string[] | Promise<readonly string[]>);
  /** Which metric names to read. Default auto: the sidecar's when present, else by the names' prefix. */
  readonly engineKind?: ScrapeEngineKind;
  /** Per request. Default 1 s. */
  readonly timeoutMs?: number;
  /** Default: an own agent, closed by close(). */
  readonly dispatcher?: Dispatcher;
}

export function scrapeSource(opts: ScrapeSourceOptions): MetricSource {
  const kind = opts.engineKind ?? 'auto';
  const timeoutMs = opts.timeoutMs ?? SCRAPE_DEFAULTS.timeoutMs;
  if (!(timeoutMs > 0)) throw new RangeError(`scrape: timeoutMs must be > 0, got ${timeoutMs}`);
  const ownsDispatcher = opts.dispatcher === undefined;
  const dispatcher = opts.dispatcher ?? new Agent({ connections: 2, keepAliveTimeout: 10_000 });
  const listUrls = async (): Promise<string[]> => (typeof opts.urls === 'function' ? [...(await opts.urls())] : [...opts.urls]).map(metricsUrl);
  const description = typeof opts.urls === 'function' ? `scrape of the replicas' /metrics (${opts.metric})` : `scrape of ${opts.urls.length} URL${opts.urls.length === 1 ? '' : 's'} (${opts.metric})`;

  return {
    description,
    async read(): Promise<MetricReading> {
      const urls = await listUrls();
      if (urls.length === 0) throw new MetricSourceError('no_targets', 'no /metrics URL to scrape (none configured, no replica running)');
      const results = await Promise.allSettled(urls.map((url) => scrapeOne(url, kind, timeoutMs, dispatcher)));
      let sum = 0;
      let answered = 0;
      const failures: string[] = [];
      let firstError: MetricSourceError | undefined;
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') {
          sum += pick(r.value, opts.metric);
          answered++;
        } else {
          const err = r.reason instanceof MetricSourceError ? r.reason : new MetricSourceError('bad_response', `${urls[i]}: ${String(r.reason)}`);
          firstError ??= err;
          failures.push(err.message);
        }
      });
      const failed = failures.length === 0 ? '' : ` (${failures.slice(0, 3).join('; ')}${failures.length > 3 ? `; ${failures.length - 3} more` : ''})`;
      if (answered === 0) {
        throw new MetricSourceError(firstError?.code ?? 'unreachable', `no engine answered of ${urls.length}${failed}`, { cause: firstError });
      }
      return { basis: 'average', value: sum / answered, replicas: answered, detail: `${answered} of ${urls.length} engines answered${failed}` };
    },
    async close() {
      if (ownsDispatcher) await dispatcher.close();
    },
  };
}

/** http://host:port -> http://host:port/metrics; a URL with a path is kept as it is. */
export function metricsUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new MetricSourceError('no_targets', `not a URL: "${url}"`);
  }
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/metrics';
  return u.toString();
}

/**
 * An engine's or a sidecar's /metrics text read as load. Throws MetricSourceError (bad_response) when the text has
 * none of the expected metrics, or a sidecar says its engine is down.
 */
export function parseScrapedLoad(text: string, kind: ScrapeEngineKind, now: number): EngineLoad {
  const resolved = kind === 'auto' ? detectKind(text) : kind;
  if (resolved === undefined) {
    throw new MetricSourceError('bad_response', `no engine load metrics (vllm:, sglang:, llamacpp: or switchyard_engine_*) in: ${snippet(text, 120)}`);
  }
  if (resolved === 'sidecar') return parseSidecarLoad(text, now);
  try {
    return parseEngineLoad(resolved, text, now);
  } catch (err) {
    throw new MetricSourceError('bad_response', (err as Error).message, { cause: err });
  }
}

function detectKind(text: string): Exclude<ScrapeEngineKind, 'auto'> | undefined {
  if (SIDECAR_PRESENT.test(text)) return 'sidecar';
  if (/^vllm:/m.test(text)) return 'vllm';
  if (/^sglang:/m.test(text)) return 'sglang';
  if (/^llamacpp:/m.test(text)) return 'llamacpp';
  return undefined;
}

/** running and waiting summed over series, KV usage their mean clamped to [0, 1], as parseEngineLoad. */
function parseSidecarLoad(text: string, now: number): EngineLoad {
  const acc = new Map<string, { sum: number; count: number }>();
  for (const family of parsePrometheusTextFormat(keepSamples(text, SIDECAR_WANTED))) {
    let a = acc.get(family.name);
    if (a === undefined) acc.set(family.name, (a = { sum: 0, count: 0 }));
    for (const sample of family.metrics) {
      const v = sample.value === undefined ? NaN : Number(sample.value);
      if (Number.isFinite(v)) {
        a.sum += v;
        a.count++;
      }
    }
  }
  const up = acc.get(SIDECAR_METRICS.up);
  if (up !== undefined && up.count > 0 && up.sum / up.count < 1) throw new MetricSourceError('bad_response', 'the sidecar reports its engine down (switchyard_engine_up 0)');
  const running = acc.get(SIDECAR_METRICS.running);
  const waiting = acc.get(SIDECAR_METRICS.waiting);
  const kv = acc.get(SIDECAR_METRICS.kvUsage);
  if (running === undefined && waiting === undefined && kv === undefined) {
    throw new MetricSourceError('bad_response', `no sidecar load metrics (${SIDECAR_METRICS.running}, ${SIDECAR_METRICS.waiting}, ${SIDECAR_METRICS.kvUsage})`);
  }
  return {
    running: Math.max(0, running?.sum ?? 0),
    waiting: Math.max(0, waiting?.sum ?? 0),
    kvUsage: kv === undefined || kv.count === 0 ? 0 : Math.min(1, Math.max(0, kv.sum / kv.count)),
    scrapedAt: now,
  };
}

function pick(load: EngineLoad, metric: ScrapedMetric): number {
  switch (metric) {
    case 'kv_cache_usage':
      return load.kvUsage;
    case 'waiting_requests':
      return load.waiting;
    case 'running_requests':
      return load.running;
  }
}

async function scrapeOne(url: string, kind: ScrapeEngineKind, timeoutMs: number, dispatcher: Dispatcher): Promise<EngineLoad> {
  let status: number;
  let text: string;
  try {
    const res = await request(url, { method: 'GET', dispatcher, headers: { accept: 'text/plain' }, signal: AbortSignal.timeout(timeoutMs) });
    status = res.statusCode;
    text = await res.body.text();
  } catch (err) {
    throw transportError(url, timeoutMs, err);
  }
  if (status < 200 || status >= 300) throw new MetricSourceError('http_status', `${url}: HTTP ${status}${text.trim() === '' ? '' : `: ${snippet(text, 120)}`}`);
  try {
    return parseScrapedLoad(text, kind, Date.now());
  } catch (err) {
    throw new MetricSourceError('bad_response', `${url}: ${(err as Error).message}`, { cause: err });
  }
}
