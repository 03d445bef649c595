import { describe, expect, it } from 'vitest';
import { maxScorePicker } from '../../../router/routing/plugins/max-score.js';
import { randomPicker } from '../../../router/routing/plugins/random.js';
import { roundRobinPicker } from '../../../router/routing/plugins/round-robin.js';
import { engine, request, sequence } from './fixtures.js';

const abc = [engine('a'), engine('b'), engine('c')];

describe('max-score picker', () => {
  it('picks the highest score without consulting the rng', () => {
    const picker = maxScorePicker(() => {
      throw new Error('rng used without a tie');
    });
    expect(picker.pick(request(), abc, [0.2, 0.9, 0.5]).spec.id).toBe('b');
  });

  it('breaks ties with the rng, uniformly over the tied engines', () => {
    const engines = [engine('a'), engine('b'), engine('c'), engine('d')];
    const scores = [0.7, 0.3, 0.7, 0.7];
    // Reservoir sampling: the k-th tie replaces the pick when rng() < 1/k.
    expect(maxScorePicker(sequence(0.99, 0.99)).pick(request(), engines, scores).spec.id).toBe('a');
    expect(maxScorePicker(sequence(0.1, 0.99)).pick(request(), engines, scores).spec.id).toBe('c');
    expect(maxScorePicker(sequence(0.99, 0.1)).pick(request(), engines, scores).spec.id).toBe('d');

    let seed = 42;
    const lcg = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const picker = maxScorePicker(lcg);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) {
      const id = picker.pick(request(), engines, scores).spec.id;
      counts[id] = (counts[id] ?? 0) + 1;
    }
    expect(counts['b']).toBeUndefined();
    for (const id of ['a', 'c', 'd']) expect(counts[id]).toBeGreaterThan(850);
  });

  it('treats scores within floating-point noise as a tie', () => {
    const picker = maxScorePicker(sequence(0));
    expect(picker.pick(request(), [engine('a'), engine('b')], [0.1 + 0.2, 0.3]).spec.id).toBe('b');
  });
});

describe('random picker', () => {
  it('maps the rng onto the candidates', () => {
    const picker = randomPicker(sequence(0, 0.34, 0.67, 0.999999, 1));
    const picks = Array.from({ length: 5 }, () => picker.pick(request(), abc, [0, 0, 0]).spec.id);
    expect(picks).toEqual(['a', 'b', 'c', 'c', 'c']);
  });
});

describe('round-robin picker', () => {
  it('cycles evenly over three engines', () => {
    const picker = roundRobinPicker();
    const picks = Array.from({ length: 9 }, () => picker.pick(request(), abc, [0, 0, 0]).spec.id);
    expect(picks).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('does not depend on candidate order', () => {
    const picker = roundRobinPicker();
    const shuffled = [engine('c'), engine('a'), engine('b')];
    const picks = Array.from({ length: 4 }, () => picker.pick(request(), shuffled, [0, 0, 0]).spec.id);
    expect(picks).toEqual(['a', 'b', 'c', 'a']);
  });

  it('skips an engine missing from the candidates and resumes its turn when it returns', () => {
    const picker = roundRobinPicker();
    const withoutB = [engine('a'), engine('c')];
    const picks = [
      picker.pick(request(), abc, []).spec.id, // a
      picker.pick(request(), withoutB, []).spec.id, // b is gone: c, not a again
      picker.pick(request(), withoutB, []).spec.id, // a
      picker.pick(request(), abc, []).spec.id, // b is back: its turn comes after a
      picker.pick(request(), abc, []).spec.id, // c
    ];
    expect(picks).toEqual(['a', 'c', 'a', 'b', 'c']);
  });

  it('keeps a separate rotation per model', () => {
    const picker = roundRobinPicker();
    const llama = [engine('a'), engine('b')];
    const qwen = [engine('c'), engine('d')];
    const picks: string[] = [];
    for (let i = 0; i < 4; i++) {
      picks.push(picker.pick(request({ model: 'llama' }), llama, []).spec.id);
      picks.push(picker.pick(request({ model: 'qwen' }), qwen, []).spec.id);
    }
    expect(picks).toEqual(['a', 'c', 'b', 'd', 'a', 'c', 'b', 'd']);
  });
});
