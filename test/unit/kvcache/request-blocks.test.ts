import { describe, expect, it } from 'vitest';
import { blockNamespace, promptBlockHashes } from '../../../kvcache/block-hash.js';
import { renderChatPrompt, renderCompletionPrompt } from '../../../kvcache/chat-template.js';
import { canonicalPrompt, requestBlockHashes, SEGMENT_CHARS } from '../../../kvcache/request-blocks.js';
import { approximateTokenizer, tokenize } from '../../../kvcache/tokenizers/approximate.js';
import { createTokenizer } from '../../../kvcache/tokenizers/tokenizer.js';

const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const OPTIONS = { tokenizer: approximateTokenizer, blockSize: 16, namespace: MODEL };
const SYSTEM = 'You are a careful assistant for the operations team. Answer with the exact commands to run, and why. '.repeat(4);

/** Varied prose with newlines, digits, punctuation and non-Latin letters, `chars` long. */
function longText(chars: number): string {
  const words = ['route', 'cache', 'Überfluß', 'naïve', '東京', 'queue', "don't", 'x86_64', '2048', 'tokens,', 'block.', '(prefix)', 'engine\n\n', 'KV-cache', '  spaced'];
  let text = '';
  for (let i = 0; text.length < chars; i++) text += (i === 0 ? '' : ' ') + words[(i * 7) % words.length];
  return text.slice(0, chars);
}

describe('requestBlockHashes', () => {
  it('hashes a chat request as the engine renders and tokenizes it', async () => {
    const messages = [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: 'How do I drain a node?' },
    ];
    const { hashes, promptTokens } = await requestBlockHashes({ messages }, OPTIONS);
    const tokens = tokenize(renderChatPrompt(messages));
    expect(promptTokens).toBe(tokens.length);
    expect(hashes).toEqual(promptBlockHashes(tokens, OPTIONS));
    expect(hashes.length).toBe(Math.floor(tokens.length / 16));
  });

  it('gives two conversations that share a system prompt the same leading blocks', async () => {
    const a = await requestBlockHashes({ messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'first question' }] }, OPTIONS);
    const b = await requestBlockHashes({ messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'another one' }] }, OPTIONS);
    const shared = Math.floor(tokenize(renderChatPrompt([{ role: 'system', content: SYSTEM }])).length / 16) - 1;
    expect(shared).toBeGreaterThan(3);
    expect(a.hashes.slice(0, shared)).toEqual(b.hashes.slice(0, shared));
  });

  it('treats text content parts as their concatenation, and null content as empty', async () => {
    const asParts = await requestBlockHashes({ messages: [{ role: 'user', content: [{ type: 'text', text: SYSTEM.slice(0, 200) }, { type: 'text', text: SYSTEM.slice(200) }] }, { role: 'assistant', content: null }] }, OPTIONS);
    const asString = await requestBlockHashes({ messages: [{ role: 'user', content: SYSTEM }, { role: 'assistant', content: '' }] }, OPTIONS);
    expect(asParts).toEqual(asString);
  });

  it('stops the prompt at a part that is not text, keeping the prefix before it', () => {
    const prompt = canonicalPrompt({ messages: [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: [{ type: 'text', text: 'What is in ' }, { type: 'image_url' }, { type: 'text', text: 'this?' }] }] });
    expect(prompt).toBe('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is in ');
  });

  it('renders completion prompts as the engine does: text with a BOS, ids as given, a batch by its first prompt', () => {
    expect(canonicalPrompt({ prompt: 'Once upon a time' })).toBe(renderCompletionPrompt('Once upon a time'));
    expect(canonicalPrompt({ prompt: ['Once upon a time', 'Another'] })).toBe(renderCompletionPrompt('Once upon a time'));
    expect(canonicalPrompt({ prompt: [1, 2, 3] })).toEqual([1, 2, 3]);
    expect(canonicalPrompt({ prompt: [[4, 5], [6]] })).toEqual([4, 5]);
    expect(canonicalPrompt({ prompt: [] })).toEqual([]);
  });

  it('hashes token-id prompts directly', async () => {
    const ids = Array.from({ length: 50 }, (_, i) => i + 100);
    const { hashes, promptTokens } = await requestBlockHashes({ prompt: ids }, OPTIONS);
    expect(promptTokens).toBe(50);
    expect(hashes).toEqual(promptBlockHashes(ids, OPTIONS));
  });

  it('separates namespaces: the same prompt under another model or adapter shares no block', async () => {
    const body = { messages: [{ role: 'user', content: SYSTEM }] };
    const base = await requestBlockHashes(body, OPTIONS);
    const adapter = await requestBlockHashes(body, { ...OPTIONS, namespace: blockNamespace(MODEL, 'sql-lora') });
    expect(adapter.hashes.length).toBe(base.hashes.length);
    expect(adapter.hashes.some((h) => base.hashes.includes(h))).toBe(false);
  });

  for (const name of ['approximate', 'gpt-4o', 'gpt-4'] as const) {
    it(`tokenizes a long prompt in segments to exactly the whole text's tokens (${name})`, async () => {
      const tokenizer = await createTokenizer(name);
      const text = longText(SEGMENT_CHARS * 3 + 1234);
      const options = { tokenizer, blockSize: 16, namespace: MODEL };
      const whole = tokenizer.encode(renderCompletionPrompt(text));
      const { hashes, promptTokens } = await requestBlockHashes({ prompt: text }, options);
      expect(promptTokens).toBe(whole.length);
      expect(hashes).toEqual(promptBlockHashes(whole, options));
    });
  }

  it('lets the event loop run while it tokenizes a long prompt', async () => {
    const blocks = requestBlockHashes({ prompt: longText(SEGMENT_CHARS * 8) }, OPTIONS);
    let immediateRan = false;
    setImmediate(() => (immediateRan = true));
    // Without a yield the whole call would finish in this turn, before any immediate callback.
    await blocks;
    expect(immediateRan).toBe(true);
  });
});
