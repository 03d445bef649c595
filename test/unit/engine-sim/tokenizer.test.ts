import { describe, expect, it } from 'vitest';
import { generateOutput, sampleOutputLength } from '../../../engine-sim/output.js';
import { renderChatPrompt, tokenize, VOCAB_SIZE } from '../../../engine-sim/tokenizer.js';

const PARAGRAPH =
  'The history of computing is longer than the history of computing hardware and modern computing technology, and ' +
  'includes the history of methods intended for pen and paper or for chalk and slate, with or without the aid of ' +
  'tables. Digital computing is intimately tied to the representation of numbers. But long before abstractions like ' +
  'the number arose, there were mathematical concepts to serve the purposes of civilization. When a large language ' +
  'model serves many users, the operator must decide where each request runs, how long it may wait, and which cached ' +
  'prefix it can reuse to avoid recomputing attention over the same documents again and again.';

describe('tokenize', () => {
  it('gives the same ids for the same text, in any call', () => {
    const first = tokenize(PARAGRAPH);
    expect(tokenize(PARAGRAPH)).toEqual(first);
    expect(tokenize(PARAGRAPH.replace('pen', 'pencil'))).not.toEqual(first);
  });

  it('costs about 4 characters per token on English prose', () => {
    const ratio = PARAGRAPH.length / tokenize(PARAGRAPH).length;
    expect(ratio).toBeGreaterThan(3.6);
    expect(ratio).toBeLessThan(4.6);
  });

  it('keeps ids inside the vocabulary', () => {
    for (const id of tokenize(PARAGRAPH + ' 1234567 ünïcödé 🚀 <|eot_id|>')) {
      expect(Number.isInteger(id)).toBe(true);
      expect(id).toBeGreaterThanOrEqual(0);
      expect(id).toBeLessThan(VOCAB_SIZE);
    }
  });

  it('cuts long words into chunks and keeps short ones whole', () => {
    expect(tokenize(' cat')).toHaveLength(1);
    expect(tokenize(' internationalization')).toHaveLength(4);
  });

  it('gives shared text prefixes shared token prefixes', () => {
    const shared = 'You are a helpful assistant. Answer briefly.\n\n';
    const a = tokenize(shared + 'What is a cache?');
    const b = tokenize(shared + 'Who wrote Hamlet?');
    const common = tokenize(shared);
    expect(a.slice(0, common.length)).toEqual(common);
    expect(b.slice(0, common.length)).toEqual(common);
  });

  it('treats the chat template markers as single special tokens', () => {
    expect(tokenize('<|begin_of_text|><|eot_id|>')).toEqual([128000, 128009]);
  });
});

describe('renderChatPrompt', () => {
  it('renders every message with its role, ending with the assistant generation prompt', () => {
    const text = renderChatPrompt([
      { role: 'system', content: 'Be terse.' },
      { role: 'user', content: 'Hi' },
    ]);
    expect(text).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  it('lets a follow-up turn start with the previous prompt and answer tokens, so its KV can be reused', () => {
    const firstTurn = [{ role: 'user', content: 'Tell me about rivers.' }];
    const answer = generateOutput(7, 40);
    const secondTurn = [...firstTurn, { role: 'assistant', content: answer.pieces.join('') }, { role: 'user', content: 'More.' }];
    const previous = [...tokenize(renderChatPrompt(firstTurn)), ...answer.ids];
    expect(tokenize(renderChatPrompt(secondTurn)).slice(0, previous.length)).toEqual(previous);
  });
});

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
