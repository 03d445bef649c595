/**
 * The approximate tokenizer: zero dependencies, the router's default, and the simulated engine's own tokenizer (so
 * the router's token counts and block hashes agree with what the simulator caches).
 *
 * A deterministic stand-in for a BPE tokenizer. It does not need to match Llama's vocabulary, only to behave like
 * one where a router can observe it: the same text always gives the same ids, English text costs about 4 characters
 * per token (so token estimates, TPM limits and KV usage land in realistic ranges), shared text prefixes give
 * shared token prefixes (so prefix caching works), and concatenating texts at a word boundary concatenates their
 * tokens (so a multi-turn conversation re-sent with the previous answer hits the cache, as on vLLM).
 *
 * Pre-tokenization follows GPT-2/Llama-3: a word carries its leading space, digits go in groups of three,
 * punctuation runs stand alone, and the chat template's special tokens are single tokens. Pieces longer than
 * MAX_PIECE_CHARS are cut into chunks, which is what brings long words near BPE's ratio.
 */

import { hashString } from '../../core/hash.js';
import type { Tokenizer } from './tokenizer.js';

/** Llama-3's vocabulary size; ordinary pieces are hashed below the special-token range. */
export const VOCAB_SIZE = 128256;
const ORDINARY_VOCAB = 128000;
// Chosen so that English prose averages about 4 characters per token, close to Llama-3's BPE on the same text.
export const MAX_PIECE_CHARS = 6;

const SPECIAL_TOKENS: Readonly<Record<string, number>> = {
  '<|begin_of_text|>': 128000,
  '<|end_of_text|>': 128001,
  '<|start_header_id|>': 128006,
  '<|end_header_id|>': 128007,
  '<|eot_id|>': 128009,
};

// Newline runs are their own piece whatever follows, and punctuation stops before a special token, so that
// "\n\n" + answer + "<|eot_id|>" tokenizes as the three parts would separately (the multi-turn cache reuse above).
const PIECE_PATTERN = /<\|[a-z_]+\|>|\n+| ?\p{L}+| ?\p{N}{1,3}| ?(?:(?!<\|)[^\s\p{L}\p{N}])+|[^\S\n]+(?!\S)|[^\S\n]+|\S/gu;

/** Token ids of `text`. No BOS is added; callers that want one render it into the text (see chat-template.ts). */
export function tokenize(text: string): number[] {
  const ids: number[] = [];
  for (const match of text.matchAll(PIECE_PATTERN)) {
    const piece = match[0];
    if (piece.length <= MAX_PIECE_CHARS) {
      ids.push(pieceId(piece));
      continue;
    }
    const special = SPECIAL_TOKENS[piece];
    if (special !== undefined) {
      ids.push(special);
      continue;
    }
    for (let i = 0; i < piece.length; i += MAX_PIECE_CHARS) ids.push(pieceId(piece.slice(i, i + MAX_PIECE_CHARS)));
  }
  return ids;
}

/** The id of one piece as tokenize() would produce it; the output generator uses it to emit ids without re-tokenizing. */
export function pieceId(piece: string): number {
  return SPECIAL_TOKENS[piece] ?? hashString(piece) % ORDINARY_VOCAB;
}

export const approximateTokenizer: Tokenizer = { name: 'approximate', encode: tokenize };
