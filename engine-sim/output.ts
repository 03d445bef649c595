/**
 * Deterministic "model output": a seeded stream of short English words and punctuation. Each emitted piece is
 * exactly one token of our tokenizer (words fit in one piece, punctuation never follows punctuation), so
 * tokenize(text) gives back the generated ids and a follow-up turn that quotes the answer reuses its KV blocks.
 */

import { createRng, mixHashes } from '../core/hash.js';
import { pieceId } from '../kvcache/tokenizers/approximate.js';

// Every word is at most MAX_PIECE_CHARS - 1 letters, so it stays one token with its leading space.
const WORDS = [
  'the', 'of', 'and', 'to', 'in', 'is', 'that', 'it', 'was', 'for', 'on', 'are', 'as', 'with', 'they', 'at', 'be',
  'this', 'have', 'from', 'or', 'one', 'had', 'by', 'word', 'but', 'not', 'what', 'all', 'were', 'we', 'when',
  'your', 'can', 'said', 'there', 'use', 'an', 'each', 'which', 'she', 'do', 'how', 'their', 'if', 'will', 'up',
  'other', 'about', 'out', 'many', 'then', 'them', 'these', 'so', 'some', 'her', 'would', 'make', 'like', 'him',
  'into', 'time', 'has', 'look', 'two', 'more', 'write', 'go', 'see', 'way', 'could', 'my', 'than', 'first',
  'water', 'been', 'call', 'who', 'its', 'now', 'find', 'long', 'down', 'day', 'did', 'get', 'come', 'made', 'may',
  'part', 'model', 'cache', 'token', 'route', 'queue', 'batch', 'block', 'load', 'fast', 'light', 'small', 'large',
  'plan', 'data', 'graph', 'river', 'stone', 'green', 'north', 'quiet', 'clear', 'sound', 'field', 'paper',
] as const;

interface Piece {
  readonly text: string;
  readonly id: number;
}

function piece(text: string): Piece {
  return { text, id: pieceId(text) };
}

const capitalize = (w: string): string => w[0]!.toUpperCase() + w.slice(1);
const INNER = WORDS.map((w) => piece(' ' + w));
const SENTENCE_START = WORDS.map((w) => piece(' ' + capitalize(w)));
const TEXT_START = WORDS.map((w) => piece(capitalize(w)));
const PERIOD = piece('.');
const COMMA = piece(',');

/** Generated tokens: `pieces[i]` is the text of token `ids[i]`. */
export interface GeneratedText {
  readonly ids: number[];
  readonly pieces: string[];
}

/** `count` tokens of text, fully determined by `seed`. */
export function generateOutput(seed: number, count: number): GeneratedText {
  const random = createRng(seed);
  const ids: number[] = new Array(count);
  const pieces: string[] = new Array(count);
  let sinceSentenceStart = 0;
  let previousWasPunctuation = false;
  for (let i = 0; i < count; i++) {
    let next: Piece;
    const pick = Math.floor(random() * WORDS.length);
    if (i === 0) next = TEXT_START[pick]!;
    else if (!previousWasPunctuation && sinceSentenceStart >= 4 && random() < 0.12) next = PERIOD;
    else if (!previousWasPunctuation && sinceSentenceStart >= 3 && random() < 0.06) next = COMMA;
    else if (pieces[i - 1] === PERIOD.text) next = SENTENCE_START[pick]!;
    else next = INNER[pick]!;
    ids[i] = next.id;
    pieces[i] = next.text;
    previousWasPunctuation = next === PERIOD || next === COMMA;
    sinceSentenceStart = next === PERIOD ? 0 : sinceSentenceStart + 1;
  }
  return { ids, pieces };
}

// Separate stream so the sampled length does not shift when the text generator changes.
const LENGTH_STREAM = 0x6c656e;

/**
 * The length a model would produce before emitting end-of-sequence, for requests with no max_tokens: exponential
 * with mean `mean` (output lengths of chat workloads are long-tailed), at least 1, at most `max`.
 */
export function sampleOutputLength(seed: number, mean: number, max: number): number {
  const u = createRng(mixHashes(seed, LENGTH_STREAM))();
  return Math.min(max, Math.max(1, Math.round(-mean * Math.log(1 - u))));
}
