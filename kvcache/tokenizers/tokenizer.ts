/**
 * Tokenizers the router can cut prompts with, behind one interface so block hashing does not care which.
 *
 * `encode` returns a plain number[] because that is what both implementations produce natively (the approximate
 * tokenizer pushes ids, gpt-tokenizer returns an array), and what OpenAI bodies carry when a prompt is given as ids:
 * a Uint32Array would add one copy of every prompt. Block hashing copies each block into a reused typed scratch
 * buffer anyway (the WASM hash copies its input into linear memory whatever it is given), so nothing is lost.
 */

import { approximateTokenizer } from './approximate.js';
import { loadBpeTokenizer } from './bpe.js';

export interface Tokenizer {
  readonly name: TokenizerName;
  /** Token ids of `text`, with no BOS added: the chat template renders one. Never throws on any string. */
  encode(text: string): number[];
}

/**
 * 'approximate' is the simulated engine's tokenizer (zero dependencies, about 4 characters per token); 'gpt-4o' is
 * OpenAI's o200k_base BPE (GPT-4o, GPT-4.1, o-series, gpt-oss), 'gpt-4' is cl100k_base (GPT-4, GPT-3.5).
 */
export const TOKENIZER_NAMES = ['approximate', 'gpt-4o', 'gpt-4'] as const;
export type TokenizerName = (typeof TOKENIZER_NAMES)[number];

/**
 * The named tokenizer. Asynchronous because a BPE vocabulary is loaded only when asked for: o200k_base alone costs
 * about 260 ms and 35 MB of heap, which a router using the approximate tokenizer should not pay.
 */
export async function createTokenizer(name: TokenizerName): Promise<Tokenizer> {
  switch (name) {
    case 'approximate':
      return approximateTokenizer;
    case 'gpt-4o':
    case 'gpt-4':
      return loadBpeTokenizer(name);
    default:
      throw new RangeError(`unknown tokenizer "${String(name)}"; expected one of ${TOKENIZER_NAMES.join(', ')}`);
  }
}
