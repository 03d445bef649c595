import { beforeAll, describe, expect, it } from 'vitest';
import { generateTrace } from '../../../bench/replay/generators.js';
import { runReplay } from '../../../bench/replay/replay.js';
import { formatTable, renderHtml, type ReplayReport } from '../../../bench/replay/report.js';
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
      trace: generateTrace('shared-system-prompt', 80, 3),
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

  it('prints one row per policy and the reference line', () => {
    const table = formatTable(report).split('\n');
    expect(table[0]).toBe('80 requests from shared <test>.jsonl, 3 engines, rate x1, load signal pending, approximate hashing');
    expect(table.filter((l) => /^(prefix-cache|round-robin|sglang-cache-aware) /.test(l))).toHaveLength(3);
    expect(table.some((l) => l.startsWith('reference: one LRU cache of 3 x 440,000 tokens (perfect partitioning) hits'))).toBe(true);
  });

  it('renders a self-contained page: balanced tags, inline SVG plots, nothing fetched, text escaped', () => {
    const html = renderHtml(report);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(unbalancedTags(html)).toEqual([]);
    // TTFT CDF, hit ratio, and one load plot per policy.
    expect(html.match(/<svg /g)).toHaveLength(2 + 3);
    expect(html).toContain('perfect partitioning');
    expect(html).not.toMatch(/NaN|Infinity|undefined/);
    expect(html).not.toMatch(/<script|src=|href=/);
    expect(html).toContain('shared &#60;test&#62;.jsonl');
  });
});
