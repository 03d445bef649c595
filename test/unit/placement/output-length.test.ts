import { describe, expect, it } from 'vitest';
import { DEFAULT_OUTPUT_TOKENS, OutputLengths } from '../../../router/placement/output-length.js';

describe('OutputLengths', () => {
  it('expects DEFAULT_OUTPUT_TOKENS without history, capped by max_tokens', () => {
    const o = new OutputLengths();
    expect(o.expected('t', 'm', undefined)).toBe(DEFAULT_OUTPUT_TOKENS);
    expect(o.expected('t', 'm', 4096)).toBe(DEFAULT_OUTPUT_TOKENS);
    expect(o.expected('t', 'm', 40)).toBe(40);
    // Never less than the one token every answer has.
    expect(o.expected('t', 'm', 0)).toBe(1);
  });

  it('learns a running mean per (tenant, model): the first answer sets it, later ones move it by a small step', () => {
    const o = new OutputLengths();
    o.observe('t', 'm', 100);
    expect(o.expected('t', 'm', undefined)).toBe(100);
    o.observe('t', 'm', 300);
    // 100 + 0.05 x (300 - 100): about the last 20 answers count.
    expect(o.expected('t', 'm', undefined)).toBe(110);
    for (let i = 0; i < 200; i++) o.observe('t', 'm', 300);
    expect(o.expected('t', 'm', undefined)).toBe(300);
    // max_tokens still caps what history says: 4,096 asked for answers of 300 is 300; 64 asked is 64.
    expect(o.expected('t', 'm', 4096)).toBe(300);
    expect(o.expected('t', 'm', 64)).toBe(64);
  });

  it('keeps tenants and models apart', () => {
    const o = new OutputLengths();
    o.observe('a', 'm', 20);
    o.observe('b', 'm', 900);
    o.observe('a', 'n', 500);
    expect(o.expected('a', 'm', undefined)).toBe(20);
    expect(o.expected('b', 'm', undefined)).toBe(900);
    expect(o.expected('a', 'n', undefined)).toBe(500);
    expect(o.expected('b', 'n', undefined)).toBe(DEFAULT_OUTPUT_TOKENS);
    // Names that would collide if simply concatenated stay apart.
    o.observe('ab', 'c', 7);
    expect(o.expected('a', 'bc', undefined)).toBe(DEFAULT_OUTPUT_TOKENS);
  });

  it('ignores answers that report no tokens', () => {
    const o = new OutputLengths();
    o.observe('t', 'm', 0);
    o.observe('t', 'm', Number.NaN);
    o.observe('t', 'm', -3);
    expect(o.expected('t', 'm', undefined)).toBe(DEFAULT_OUTPUT_TOKENS);
    o.observe('t', 'm', 50);
    o.observe('t', 'm', Number.NaN);
    expect(o.expected('t', 'm', undefined)).toBe(50);
  });

  it('remembers a bounded number of (tenant, model) pairs, forgetting the least recently used', () => {
    const o = new OutputLengths();
    o.observe('first', 'm', 10);
    for (let i = 0; i < 10_000; i++) o.observe(`t${i}`, 'm', 30);
    expect(o.expected('first', 'm', undefined)).toBe(DEFAULT_OUTPUT_TOKENS);
    expect(o.expected('t9999', 'm', undefined)).toBe(30);
  });
});
