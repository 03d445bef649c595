import { describe, expect, it } from 'vitest';
import { approximateTokenizer } from '../../../kvcache/tokenizers/approximate.js';
import { createTokenizer, TOKENIZER_NAMES, type TokenizerName } from '../../../kvcache/tokenizers/tokenizer.js';

describe('createTokenizer', () => {
  it('gives the approximate tokenizer without loading a vocabulary', async () => {
    expect(await createTokenizer('approximate')).toBe(approximateTokenizer);
  });

  it("gives OpenAI's BPE: o200k_base for gpt-4o, cl100k_base for gpt-4", async () => {
    const gpt4o = await createTokenizer('gpt-4o');
    expect(gpt4o.name).toBe('gpt-4o');
    expect(gpt4o.encode('hello world')).toEqual([24912, 2375]);
    const gpt4 = await createTokenizer('gpt-4');
    expect(gpt4.name).toBe('gpt-4');
    expect(gpt4.encode('hello world')).toEqual([15339, 1917]);
  });

  it('tokenizes special-token text in a prompt as plain text instead of throwing or honouring it', async () => {
    const gpt4o = await createTokenizer('gpt-4o');
    const ids = gpt4o.encode('hello world <|endoftext|>');
    expect(ids.slice(0, 2)).toEqual([24912, 2375]);
    expect(ids).not.toContain(199999); // o200k_base's <|endoftext|>
    expect(ids.length).toBeGreaterThan(3);
  });

  it('names every tokenizer it can make, and rejects others', async () => {
    for (const name of TOKENIZER_NAMES) expect((await createTokenizer(name)).name).toBe(name);
    await expect(createTokenizer('llama-3' as TokenizerName)).rejects.toThrow(/unknown tokenizer "llama-3"/);
  });
});
