/**
 * Small non-cryptographic hashes and a seeded PRNG: the approximate tokenizer, the simulated engine (prefix cache,
 * output text) and the replayer's synthetic traces share them, so the same input gives the same ids everywhere.
 * Hashes are 53-bit integers (plain numbers, not bigint or strings) because Map lookups keyed by small
 * numbers are the cheapest V8 offers, and the block pool does one per block. 53 bits make accidental collisions
 * between blocks negligible at simulated-cluster scale.
 */

const PRIME_A = 2654435761;
const PRIME_B = 1597334677;
const PRIME_C = 2246822507;
const PRIME_D = 3266489909;
const TWO_POW_32 = 4294967296;

/** Hashes `values[start..end)` chained onto `parent` (itself a hash), so equal contents under different parents differ. */
export function hashInts(parent: number, values: ArrayLike<number>, start = 0, end = values.length): number {
  let h1 = (0xdeadbeef ^ (parent >>> 0)) >>> 0;
  let h2 = (0x41c6ce57 ^ Math.floor(parent / TWO_POW_32)) >>> 0;
  for (let i = start; i < end; i++) {
    const v = values[i]!;
    h1 = Math.imul(h1 ^ v, PRIME_A);
    h2 = Math.imul(h2 ^ v, PRIME_B);
  }
  return finish(h1, h2, end - start);
}

/** Hashes a string's UTF-16 code units; `seed` separates unrelated uses of the same text. */
export function hashString(text: string, seed = 0): number {
  let h1 = (0xdeadbeef ^ seed) >>> 0;
  let h2 = (0x41c6ce57 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, PRIME_A);
    h2 = Math.imul(h2 ^ c, PRIME_B);
  }
  return finish(h1, h2, text.length);
}

/** Combines two hashes (or a hash and an integer seed) into one. */
export function mixHashes(a: number, b: number): number {
  return hashInts(a, [b >>> 0, Math.floor(b / TWO_POW_32)]);
}

function finish(h1: number, h2: number, length: number): number {
  h1 ^= length;
  h1 = Math.imul(h1 ^ (h1 >>> 16), PRIME_C);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), PRIME_D);
  h2 = Math.imul(h2 ^ (h2 >>> 16), PRIME_C);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), PRIME_D);
  return TWO_POW_32 * (2097151 & h2) + (h1 >>> 0);
}

/** A seeded generator of uniform numbers in [0, 1) (mulberry32): same seed, same sequence, in any process. */
export function createRng(seed: number): () => number {
  let state = (seed ^ Math.floor(seed / TWO_POW_32)) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / TWO_POW_32;
  };
}
