import { describe, expect, it } from 'vitest';
import { HEAT_WINDOW_MS, PrefixHeat } from '../../../router/placement/prefix-heat.js';

describe('PrefixHeat', () => {
  it('counts the requests that shared a prefix, decaying over HEAT_WINDOW_MS', () => {
    const heat = new PrefixHeat();
    expect(heat.sharers(1n, 0)).toBe(0);
    heat.touch(1n, 0);
    heat.touch(1n, 0);
    heat.touch(1n, 0);
    expect(heat.sharers(1n, 0)).toBeCloseTo(3, 12);
    expect(heat.sharers(1n, HEAT_WINDOW_MS)).toBeCloseTo(3 / Math.E, 12);
    // A touch adds one to the decayed count.
    heat.touch(1n, HEAT_WINDOW_MS);
    expect(heat.sharers(1n, HEAT_WINDOW_MS)).toBeCloseTo(3 / Math.E + 1, 12);
    // Asking about an earlier instant does not count more than there were.
    expect(heat.sharers(1n, 0)).toBeCloseTo(3 / Math.E + 1, 12);
  });

  it('keeps prefixes apart, and a cold one fades to nothing', () => {
    const heat = new PrefixHeat();
    for (let i = 0; i < 50; i++) heat.touch(7n, i * 10);
    heat.touch(8n, 500);
    expect(heat.sharers(7n, 500)).toBeGreaterThan(45);
    expect(heat.sharers(8n, 500)).toBeCloseTo(1, 12);
    expect(heat.sharers(9n, 500)).toBe(0);
    expect(heat.sharers(7n, 500 + 20 * HEAT_WINDOW_MS)).toBeLessThan(1e-6);
  });
});
