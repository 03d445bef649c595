import { describe, expect, it } from 'vitest';
import { approximateTokenizer, tokenize, VOCAB_SIZE } from '../../../kvcache/tokenizers/approximate.js';

const PARAGRAPH =
  'The history of computing is longer than the history of computing hardware and modern computing technology, and ' +
  'includes the history of methods intended for pen and paper or for chalk and slate, with or without the aid of ' +
  'tables. Digital computing is intimately tied to the representation of numbers. But long before abstractions like ' +
  'the number arose, there were mathematical concepts to serve the purposes of civilization. When a large language ' +
  'model serves many users, the operator must decide where each request runs, how long it may wait, and which cached ' +
  'prefix it can reuse to avoid recomputing attention over the same documents again and again.';

describe('tokenize (approximate)', () => {
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

  it('is the approximate Tokenizer', () => {
    expect(approximateTokenizer.name).toBe('approximate');
    expect(approximateTokenizer.encode(PARAGRAPH)).toEqual(tokenize(PARAGRAPH));
  });
});
