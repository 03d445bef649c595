import { describe, expect, it } from 'vitest';
import { renderChatPrompt } from '../../../kvcache/chat-template.js';
import { tokenize } from '../../../kvcache/tokenizers/approximate.js';
import { generateOutput, sampleOutputLength } from '../../../engine-sim/output.js';

describe('generateOutput', () => {
  it('is determined by the seed', () => {
    expect(generateOutput(42, 50)).toEqual(generateOutput(42, 50));
    expect(generateOutput(43, 50).ids).not.toEqual(generateOutput(42, 50).ids);
  });

  it('emits exactly one token per piece: its text tokenizes back to its ids', () => {
    for (const seed of [1, 2, 3, 99]) {
      const { ids, pieces } = generateOutput(seed, 300);
      expect(ids).toHaveLength(300);
      expect(tokenize(pieces.join(''))).toEqual(ids);
    }
  });

  it('lets a follow-up turn start with the previous prompt and answer tokens, so its KV can be reused', () => {
    const firstTurn = [{ role: 'user', content: 'Tell me about rivers.' }];
    const answer = generateOutput(7, 40);
    const secondTurn = [...firstTurn, { role: 'assistant', content: answer.pieces.join('') }, { role: 'user', content: 'More.' }];
    const previous = [...tokenize(renderChatPrompt(firstTurn)), ...answer.ids];
    expect(tokenize(renderChatPrompt(secondTurn)).slice(0, previous.length)).toEqual(previous);
  });
});

describe('sampleOutputLength', () => {
  it('averages near the mean, stays within [1, max] and is deterministic', () => {
    const lengths = Array.from({ length: 2000 }, (_, seed) => sampleOutputLength(seed, 128, 1024));
    const mean = lengths.reduce((a, b) => a + b, 0) / lengths.length;
    expect(mean).toBeGreaterThan(110);
    expect(mean).toBeLessThan(146);
    expect(Math.min(...lengths)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...lengths)).toBeLessThanOrEqual(1024);
    expect(sampleOutputLength(5, 128, 1024)).toBe(lengths[5]);
    expect(sampleOutputLength(5, 128, 10)).toBeLessThanOrEqual(10);
  });
});
