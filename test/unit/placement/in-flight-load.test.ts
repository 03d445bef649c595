import { describe, expect, it } from 'vitest';
import { InFlightLoad, PREFILL_RATE_WINDOW_MS, type RequestLoad } from '../../../router/placement/in-flight-load.js';

const load = (prefillTokens: number, kvTokens: number, outputTokens: number): RequestLoad => ({ prefillTokens, kvTokens, outputTokens });

describe('InFlightLoad', () => {
  it('counts requests, queued prefill, KV and output; prefill leaves at the first token, the rest at the end', () => {
    const l = new InFlightLoad();
    const a = load(3000, 3100, 200);
    const b = load(500, 2100, 100);
    l.add(a, 0);
    l.add(b, 0);
    expect(l).toMatchObject({ inFlight: 2, pendingPrefillTokens: 3500, kvTokens: 5200, outputTokens: 300 });
    l.prefillDone(a, 10);
    expect(l).toMatchObject({ inFlight: 2, pendingPrefillTokens: 500, kvTokens: 5200, outputTokens: 300 });
    l.remove(a);
    expect(l).toMatchObject({ inFlight: 1, pendingPrefillTokens: 500, kvTokens: 2100, outputTokens: 100 });
    l.prefillDone(b, 20);
    l.remove(b);
    expect(l).toMatchObject({ inFlight: 0, pendingPrefillTokens: 0, kvTokens: 0, outputTokens: 0 });
  });

  it('never goes negative, and an empty engine holds nothing whatever the float sums drifted to', () => {
    const l = new InFlightLoad();
    l.remove(load(10, 10, 10));
    expect(l).toMatchObject({ inFlight: 0, pendingPrefillTokens: 0, kvTokens: 0, outputTokens: 0 });
    const odd = load(0.1, 0.1, 0.1);
    const other = load(0.2, 0.2, 0.2);
    l.add(odd, 0);
    l.add(other, 0);
    l.prefillDone(other, 0);
    l.prefillDone(other, 0);
    expect(l.pendingPrefillTokens).toBe(0);
    l.remove(odd);
    l.remove(other);
    expect(l).toMatchObject({ inFlight: 0, pendingPrefillTokens: 0, kvTokens: 0, outputTokens: 0 });
  });

  it('keeps the prompt tokens sent lately as a rate that decays over PREFILL_RATE_WINDOW_MS', () => {
    const l = new InFlightLoad();
    expect(l.recentPrefillRate(0)).toBe(0);
    l.add(load(5000, 5000, 10), 1000);
    // 5,000 tokens over a 5 s window: 1,000 tokens per second, right after.
    expect(l.recentPrefillRate(1000)).toBeCloseTo((1000 * 5000) / PREFILL_RATE_WINDOW_MS, 9);
    expect(l.recentPrefillRate(1000 + PREFILL_RATE_WINDOW_MS)).toBeCloseTo(1000 / Math.E, 9);
    // Finishing requests does not erase what was sent: the engine spent that time prefilling.
    l.prefillDone(load(5000, 5000, 10), 1000);
    l.remove(load(5000, 5000, 10));
    expect(l.recentPrefillRate(1000 + PREFILL_RATE_WINDOW_MS)).toBeCloseTo(1000 / Math.E, 9);
    // More arrivals add to the decayed rate.
    l.add(load(5000, 5000, 10), 1000 + PREFILL_RATE_WINDOW_MS);
    expect(l.recentPrefillRate(1000 + PREFILL_RATE_WINDOW_MS)).toBeCloseTo(1000 / Math.E + 1000, 9);
    // A clock read before the last arrival does not inflate it.
    expect(l.recentPrefillRate(0)).toBeCloseTo(1000 / Math.E + 1000, 9);
  });

  it('copyFrom carries every count and the rate over to a replacement record', () => {
    const old = new InFlightLoad();
    old.add(load(4000, 4100, 200), 0);
    old.add(load(1000, 1100, 200), 0);
    old.prefillDone(load(4000, 4100, 200), 300);
    const fresh = new InFlightLoad();
    fresh.copyFrom(old);
    expect(fresh).toMatchObject({ inFlight: 2, pendingPrefillTokens: 1000, kvTokens: 5200, outputTokens: 400 });
    expect(fresh.recentPrefillRate(2500)).toBeCloseTo(old.recentPrefillRate(2500), 12);
    expect(fresh.recentPrefillRate(0)).toBeCloseTo(1000, 9);
    expect(fresh.prefillHeadAge(500)).toBe(old.prefillHeadAge(500));
    expect(fresh.prefillHeadAge(500)).toBe(200);
  });

  it('ages the head of the prefill queue from when the queue started or the last first token came', () => {
    const l = new InFlightLoad();
    expect(l.prefillHeadAge(1000)).toBe(0);
    const a = load(8000, 8000, 10);
    const b = load(2000, 2000, 10);
    l.add(a, 1000);
    expect(l.prefillHeadAge(1000)).toBe(0);
    expect(l.prefillHeadAge(1250)).toBe(250);
    // A second prompt queues behind the head: the head's age goes on.
    l.add(b, 1100);
    expect(l.prefillHeadAge(1300)).toBe(300);
    // The head's first token: the next prompt is the head from now on.
    l.prefillDone(a, 1400);
    expect(l.prefillHeadAge(1450)).toBe(50);
    // Nothing pending: no head, whatever the clock says.
    l.prefillDone(b, 1500);
    expect(l.prefillHeadAge(9000)).toBe(0);
    // The next prompt on an idle queue starts its own age.
    l.add(load(100, 100, 10), 2000);
    expect(l.prefillHeadAge(2010)).toBe(10);
    // A clock read before the head started gives no negative age.
    expect(l.prefillHeadAge(1990)).toBe(0);
  });
});
