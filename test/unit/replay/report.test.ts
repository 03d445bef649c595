import { beforeAll, describe, expect, it } from 'vitest';
import { generateTrace } from '../../../bench/replay/generators.js';
import { runReplay } from '../../../bench/replay/replay.js';
import { formatTable, renderHtml, type ReplayReport } from '../../../bench/replay/report.js';
import { openLoop } from '../../../bench/replay/workload.js';
import { LocalPrefixIndex } from '../../../kvcache/index/local.js';

/** Tags left open or closed out of order (none when balanced); void elements and self-closed tags aside. */
function unbalancedTags(html: string): string[] {
  const voids = new Set(['meta', 'br', 'hr', 'img', 'input', 'link']);
  const stack: string[] = [];
  const wrong: string[] = [];
  for (const [, close, name, self] of html.matchAll(/<(\/?)([a-zA-Z][a-zA-Z0-9]*)\b[^>]*?(\/?)>/g)) {
    const tag = name.toLowerCase();
    if (self === '/' || voids.has(tag)) continue;
    if (close === '') stack.push(tag);
    else if (stack.pop() !== tag) wrong.push(tag);
  }
  return [...wrong, ...stack];
}

describe('replay report', () => {
  let report: ReplayReport;
  beforeAll(async () => {
    report = await runReplay({
      workload: openLoop(generateTrace('shared-system-prompt', 80, 3)),
      traceName: 'shared <test>.jsonl',
      engines: 3,
      policies: ['prefix-cache', 'round-robin', 'sglang-cache-aware'],
      rateScale: 1,
      createIndex: () => new LocalPrefixIndex({ maxEntries: 100_000 }),
    });
  });

  it('summarises every policy, with the perfect-partitioning reference', () => {
    expect(report.policies.map((p) => p.summary.policy)).toEqual(['prefix-cache', 'round-robin', 'sglang-cache-aware']);
    expect(report.requests).toBe(80);
    expect(report.referenceHitRatio).toBeGreaterThan(0.5);
    for (const { summary } of report.policies) {
      expect(summary.requests).toBe(80);
      expect(summary.ttftMs.p50).toBeLessThanOrEqual(summary.ttftMs.p90);
      expect(summary.ttftMs.p90).toBeLessThanOrEqual(summary.ttftMs.p99);
      expect(summary.hitRatio).toBeGreaterThanOrEqual(0);
      expect(summary.hitRatio).toBeLessThanOrEqual(report.referenceHitRatio + 1e-9);
    }
    // Round-robin sends a third of the requests to each engine: each computes the system prompt once.
    const [prefix, roundRobin] = report.policies.map((p) => p.summary.hitRatio);
    expect(prefix).toBeGreaterThan(0.5);
    expect(roundRobin).toBeGreaterThan(0.5);
  });

  it('survives a JSON round trip with every number finite', () => {
    const json = JSON.parse(JSON.stringify(report)) as ReplayReport;
    expect(json).toEqual(report);
    // JSON writes NaN and Infinity as null.
    expect(JSON.stringify(report)).not.toContain('null');
  });

  it('prints one row per policy with p50 and p99 of TTFT, TPOT and E2E, the reference line, then the prediction errors', () => {
    const table = formatTable(report).split('\n');
    expect(table[0]).toBe('80 requests from shared <test>.jsonl, 3 engines, rate x1, load signal pending, approximate hashing');
    expect(table[1].split(/ {2,}/)).toEqual(['policy', 'TTFT p50 ms', 'p99 ms', 'TPOT p50 ms', 'p99 ms', 'E2E p50 s', 'p99 s', 'hit', 'hit/ref', 'load max', 'mean', 'req/s', 'sim s']);
    const rows = table.filter((l) => /^(prefix-cache|round-robin|sglang-cache-aware) /.test(l));
    expect(rows).toHaveLength(6);
    const [, ttft50, ttft99, tpot50, tpot99, e2e50, e2e99] = rows[0].split(/ +/);
    const { summary } = report.policies[0];
    expect([ttft50, ttft99].map(Number)).toEqual([summary.ttftMs.p50, summary.ttftMs.p99].map((ms) => Number(ms.toFixed(ms < 100 ? 1 : 0))));
    expect([tpot50, tpot99]).toEqual([summary.tpotMs.p50.toFixed(1), summary.tpotMs.p99.toFixed(1)]);
    expect([e2e50, e2e99]).toEqual([summary.e2eMs.p50, summary.e2eMs.p99].map((ms) => (ms / 1000).toFixed(2)));
    expect(table.some((l) => l.startsWith('reference: one LRU cache of 3 x 440,000 tokens (perfect partitioning) hits'))).toBe(true);

    const prediction = table.findIndex((l) => l.startsWith('policy') && l.includes('TTFT error p50'));
    expect(prediction).toBeGreaterThan(1);
    expect(table[prediction].split(/ {2,}/)).toEqual(['policy', 'TTFT error p50', 'p90', 'bias', 'E2E error p50', 'p90', 'bias']);
    const [, median, p90, bias] = table[prediction + 2].split(/ +/);
    const { ttft } = summary.prediction;
    expect([median, p90]).toEqual([ttft.median, ttft.p90].map((x) => `${(100 * x).toFixed(1)}%`));
    expect(bias).toBe(`${ttft.bias > 0 ? '+' : ''}${(100 * ttft.bias).toFixed(1)}%`);
  });

  it('keeps each engine\'s batch size over time: whole requests, never more than it has in flight', () => {
    for (const { load } of report.policies) {
      expect(load.batch).toHaveLength(3);
      for (let e = 0; e < 3; e++) {
        expect(load.batch[e]).toHaveLength(load.atMs.length);
        load.batch[e].forEach((b, k) => {
          expect(Number.isInteger(b) && b >= 0).toBe(true);
          expect(b).toBeLessThanOrEqual(load.inFlight[e][k]);
        });
      }
      expect(Math.max(...load.batch.flat())).toBeGreaterThan(0);
    }
  });

  it('names a closed loop\'s users and think time instead of a rate', () => {
    const closed = formatTable({ ...report, closedLoop: { users: 32, thinkMs: 1500 } }).split('\n')[0];
    expect(closed).toBe('80 requests from shared <test>.jsonl, 3 engines, closed loop: 32 users, think time 1,500 ms mean, load signal pending, approximate hashing');
  });

  it('renders a self-contained page: balanced tags, inline SVG plots, nothing fetched, text escaped', () => {
    const html = renderHtml(report);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(unbalancedTags(html)).toEqual([]);
    // TTFT CDF, hit ratio, and per policy one plot of requests in flight and one of batch sizes.
    expect(html.match(/<svg /g)).toHaveLength(2 + 3 + 3);
    for (const p of report.policies) {
      expect(html).toContain(`${p.summary.policy}: batch size per engine`);
      expect(html).toContain(`${p.summary.policy}: requests in flight per engine`);
    }
    expect(html).toContain('TTFT error p50');
    expect(html).toContain('perfect partitioning');
    expect(html).not.toMatch(/NaN|Infinity|undefined/);
    expect(html).not.toMatch(/<script|src=|href=/);
    expect(html).toContain('shared &#60;test&#62;.jsonl');
  });

  it('plots a long run with a bounded number of points, keeping a brief pile-up visible', () => {
    const n = 20_000;
    const atMs = Array.from({ length: n }, (_, k) => k * 10);
    const flat = new Array<number>(n).fill(2);
    const spike = flat.map((v, k) => (k === 12_345 ? 40 : v));
    const [first] = report.policies;
    const long = { ...report, policies: [{ ...first, load: { atMs, inFlight: [flat, spike], batch: [flat, spike] } }] };
    const html = renderHtml(long);
    const lines = [...html.matchAll(/<figcaption>([^<]*)<\/figcaption>(?:(?!<\/svg>)[\s\S])*/g)].filter(([, caption]) => caption.includes('per engine'));
    expect(lines).toHaveLength(2);
    for (const [figure] of lines) {
      const polylines = [...figure.matchAll(/points="([^"]*)"/g)].map(([, points]) => points.split(' ').map((p) => p.split(',').map(Number)));
      expect(polylines).toHaveLength(2);
      for (const points of polylines) expect(points.length).toBeLessThanOrEqual(640);
      // The spike is the plot's peak: its line reaches the top of the frame (y = 16), the flat one stays low.
      expect(Math.min(...polylines[1].map(([, y]) => y))).toBeCloseTo(16, 5);
      expect(Math.min(...polylines[0].map(([, y]) => y))).toBeGreaterThan(200);
    }
  });
});
