import Fastify from 'fastify';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { AUDIT_MAX_AGE_MS, AUDIT_MIN_SAMPLES, IndexAudit } from '../../../router/placement/index-audit.js';

const BLOCK = 16;

interface LogLine {
  level: number;
  msg: string;
  engine?: string;
  reason?: string;
}

/** An audit logging through a real Fastify (pino) logger into `lines`, on a clock the test moves. */
function audit(opts: { kvEvents?: boolean; window?: number } = {}) {
  const lines: LogLine[] = [];
  const log = Fastify({ logger: { level: 'info', stream: { write: (line: string) => lines.push(JSON.parse(line) as LogLine) } } }).log;
  const registry = new Registry();
  const clock = { ms: 0 };
  const a = new IndexAudit({ registry, log, blockTokens: BLOCK, kvEvents: () => opts.kvEvents ?? false, window: opts.window, now: () => clock.ms });
  const warnings = () => lines.filter((l) => l.level === 40);
  const infos = () => lines.filter((l) => l.level === 30);
  const times = (n: number, claimed: number, cached: number, engine = 'e') => {
    for (let i = 0; i < n; i++) a.compare(engine, claimed, cached);
  };
  return { audit: a, registry, clock, warnings, infos, times };
}

const noCache = 'the engine reports no cached tokens: prefix caching off, or its usage lacks prompt_tokens_details.cached_tokens';

describe('IndexAudit', () => {
  it('agrees within one index block either way, and counts each verdict per engine', async () => {
    const { audit: a, registry } = audit();
    // 12 blocks claimed of a 192-token prompt; vLLM never caches the last token, so it holds 11 blocks.
    expect(a.compare('e', 192, 176)).toBe('agree');
    expect(a.compare('e', 192, 175)).toBe('over');
    expect(a.compare('e', 176, 192)).toBe('agree');
    expect(a.compare('e', 175, 192)).toBe('under');
    expect(a.compare('e', 0, 0)).toBe('agree');
    expect(a.compare('f', 0, 400)).toBe('under');
    const text = await registry.metrics();
    expect(text).toContain('switchyard_prefix_index_agreement_total{engine="e",verdict="agree"} 3');
    expect(text).toContain('switchyard_prefix_index_agreement_total{engine="e",verdict="over"} 1');
    expect(text).toContain('switchyard_prefix_index_agreement_total{engine="e",verdict="under"} 1');
    expect(text).toContain('switchyard_prefix_index_agreement_total{engine="f",verdict="under"} 1');
  });

  it('refuses counts that cannot be token counts, and options it cannot judge with', () => {
    const { audit: a } = audit();
    expect(() => a.compare('e', -1, 0)).toThrow(RangeError);
    expect(() => a.compare('e', 16, Number.NaN)).toThrow(/cachedTokens must be a non-negative number/);
    expect(() => audit({ window: AUDIT_MIN_SAMPLES - 1 })).toThrow(/window must be an integer of at least 20/);
  });

  it('degrades an engine that never reports cached tokens after enough over-estimates, with one warning', () => {
    const { audit: a, warnings, times } = audit();
    times(AUDIT_MIN_SAMPLES - 1, 160, 0);
    expect(a.degraded()).toEqual([]);
    times(1, 160, 0);
    expect(a.degraded()).toEqual([{ engine: 'e', reason: noCache }]);
    times(30, 160, 0);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ engine: 'e', reason: noCache });
    expect(warnings()[0]!.msg).toMatch(/engine e/);
  });

  it('blames KV events or hashing for an engine that has cached before and has KV events', () => {
    const { audit: a, times } = audit({ kvEvents: true });
    a.compare('e', 0, 64);
    times(AUDIT_MIN_SAMPLES, 160, 0);
    expect(a.degraded()).toEqual([{ engine: 'e', reason: 'KV events missing or kvcache.hashing does not match the engine' }]);
  });

  it('blames the tokenizer or hashing for an engine that has cached before and has no KV events', () => {
    const { audit: a, times } = audit();
    times(AUDIT_MIN_SAMPLES, 160, 32);
    expect(a.degraded()).toEqual([{ engine: 'e', reason: "kvcache.tokenizer or kvcache.hashing does not match the engine's" }]);
  });

  it('recovers only once most recent answers agree again, with one info line', () => {
    const { audit: a, infos, times } = audit();
    times(50, 160, 0);
    expect(a.degraded()).toHaveLength(1);
    // 25 agreeing of the last 50: still half over, so still degraded.
    times(25, 160, 160);
    expect(a.degraded()).toHaveLength(1);
    times(1, 160, 160);
    expect(a.degraded()).toEqual([]);
    times(10, 160, 160);
    expect(infos()).toEqual([expect.objectContaining({ engine: 'e', msg: expect.stringMatching(/agrees with engine e again/) })]);
  });

  it('judges a sliding window of claims of at least a block', () => {
    const { audit: a, times } = audit({ window: 20 });
    times(20, 160, 160);
    // Claims under a block are not judged, however many.
    times(100, BLOCK - 1, 0);
    times(15, 160, 0);
    expect(a.degraded()).toEqual([]);
    // The 16th over-estimate pushes the 16th agreement out: 16 of the last 20.
    times(1, 160, 0);
    expect(a.degraded()).toHaveLength(1);
  });

  it('forgets comparisons older than AUDIT_MAX_AGE_MS, so an idle engine recovers', () => {
    const { audit: a, clock, infos, times } = audit();
    times(AUDIT_MIN_SAMPLES, 160, 0);
    clock.ms += AUDIT_MAX_AGE_MS;
    expect(a.degraded()).toHaveLength(1);
    clock.ms += 1;
    expect(a.degraded()).toEqual([]);
    expect(infos()).toHaveLength(1);
  });

  it('forgets an engine removed from the fleet, with its series', async () => {
    const { audit: a, registry, times } = audit();
    times(AUDIT_MIN_SAMPLES, 160, 0, 'gone');
    times(1, 0, 0, 'kept');
    a.forget('gone');
    expect(a.degraded()).toEqual([]);
    const text = await registry.metrics();
    expect(text).not.toContain('engine="gone"');
    expect(text).toContain('engine="kept"');
  });
});
