import { describe, expect, it } from 'vitest';
import { BlockHasher, blockNamespace, DEFAULT_BLOCK_SIZE, promptBlockHashes } from '../../../kvcache/block-hash.js';

const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const TOKENS = Array.from({ length: 40 }, (_, i) => i * 1000 + 7);

describe('promptBlockHashes', () => {
  it('gives the golden hashes for a fixed input (xxHash64 of LE uint32 ids, seeded by the parent)', () => {
    // Cross-checked against @node-rs/xxhash's native xxh64 when the hash was chosen. If this fails, every index
    // in Redis and every recorded hash is silently invalidated: change it only on purpose.
    expect(promptBlockHashes(TOKENS, { blockSize: 16, namespace: MODEL })).toEqual([0xef7909b3417e612en, 0x4df8028eac6a3698n]);
    expect(promptBlockHashes(TOKENS, { blockSize: 16, namespace: blockNamespace(MODEL, 'sql-lora') })).toEqual([0x2d072614006d4b1an, 0x79bcc568798a692n]);
  });

  it('never shares a block between namespaces (models, or a model and its adapter)', () => {
    const tokens = Array.from({ length: 64 * 20 }, (_, i) => (i * 7919) % 128000);
    const base = new Set(promptBlockHashes(tokens, { blockSize: 64, namespace: MODEL }));
    for (const namespace of ['meta-llama/Llama-3.1-70B-Instruct', blockNamespace(MODEL, 'sql-lora'), blockNamespace(MODEL, 'chat-lora'), '']) {
      const other = promptBlockHashes(tokens, { blockSize: 64, namespace });
      expect(other).toHaveLength(20);
      expect(other.filter((h) => base.has(h))).toEqual([]);
    }
  });

  it('indexes full blocks only: the incomplete tail has no hash, and does not change the others', () => {
    const options = { blockSize: 16, namespace: MODEL };
    expect(promptBlockHashes(TOKENS.slice(0, 15), options)).toEqual([]);
    expect(promptBlockHashes(TOKENS.slice(0, 32), options)).toEqual(promptBlockHashes(TOKENS, options));
    expect(promptBlockHashes(TOKENS.slice(0, 33), options)).toHaveLength(2);
  });

  it('chains: a block hash depends on every token before it, so equal blocks under different prefixes differ', () => {
    const options = { blockSize: 4, namespace: MODEL };
    const a = promptBlockHashes([1, 2, 3, 4, 9, 9, 9, 9], options);
    const b = promptBlockHashes([1, 2, 3, 5, 9, 9, 9, 9], options);
    expect(a[0]).not.toBe(b[0]);
    expect(a[1]).not.toBe(b[1]);
    // Shared prefix, then divergence: the shared blocks hash the same.
    const c = promptBlockHashes([1, 2, 3, 4, 9, 9, 9, 8], options);
    expect(c[0]).toBe(a[0]);
    expect(c[1]).not.toBe(a[1]);
  });

  it('gives unsigned 64-bit values', () => {
    const tokens = Array.from({ length: 64 * 200 }, (_, i) => i);
    for (const h of promptBlockHashes(tokens, { blockSize: 64, namespace: MODEL })) {
      expect(h >= 0n && h < 1n << 64n).toBe(true);
    }
  });

  it('rejects a block size that is not a positive integer', () => {
    expect(() => promptBlockHashes(TOKENS, { blockSize: 0, namespace: MODEL })).toThrow(RangeError);
    expect(() => promptBlockHashes(TOKENS, { blockSize: 1.5, namespace: MODEL })).toThrow(RangeError);
  });

  it('defaults to 64-token blocks for the router', () => {
    expect(DEFAULT_BLOCK_SIZE).toBe(64);
  });
});

describe('BlockHasher', () => {
  it('gives the same hashes whatever pieces the tokens arrive in', () => {
    const tokens = Array.from({ length: 1000 }, (_, i) => (i * 31) % 5000);
    const options = { blockSize: 64, namespace: MODEL };
    const hasher = new BlockHasher(options);
    for (const [start, end] of [[0, 1], [1, 63], [63, 64], [64, 300], [300, 301], [301, 1000]] as const) hasher.push(tokens.slice(start, end));
    expect(hasher.hashes).toEqual(promptBlockHashes(tokens, options));
    expect(hasher.tokenCount).toBe(1000);
  });
});
