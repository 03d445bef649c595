/**
 * OpenAI's BPE vocabularies through gpt-tokenizer (pure JavaScript, vocabularies shipped in the package). Loaded
 * on demand: each vocabulary is a large module.
 */

import type { Tokenizer } from './tokenizer.js';

type BpeName = 'gpt-4o' | 'gpt-4';

// Prompt text is data, not control: a user who types "<|endoftext|>" gets it tokenized as text rather than an
// exception (gpt-tokenizer's default) or a special token (which would let text forge structure).
const AS_TEXT = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };

export async function loadBpeTokenizer(name: BpeName): Promise<Tokenizer> {
  const { encode } = name === 'gpt-4o' ? await import('gpt-tokenizer/encoding/o200k_base') : await import('gpt-tokenizer/encoding/cl100k_base');
  return { name, encode: (text) => encode(text, AS_TEXT) };
}
