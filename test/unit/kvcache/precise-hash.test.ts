import { createHash } from 'node:crypto';
import { encode as cbor } from 'cborg';
import { describe, expect, it } from 'vitest';
import { vllmBlockHashes } from '../../../kvcache/precise-hash.js';

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

/**
 * vLLM's recipe written out independently of the implementation: a general CBOR library (cborg, whose default
 * encoding is the canonical shortest form) and node:crypto. Digests are chained whole; the index keeps the last
 * 8 bytes as a big-endian integer.
 */
function reference(tokens: readonly number[], blockSize: number, seed: string, extras: (block: number) => string[] | null): bigint[] {
  const sha256 = (value: unknown): Buffer => createHash('sha256').update(cbor(value)).digest();
  let parent = sha256(seed);
  const out: bigint[] = [];
  for (let b = 0; b + 1 <= tokens.length / blockSize; b++) {
    parent = sha256([new Uint8Array(parent), tokens.slice(b * blockSize, (b + 1) * blockSize), extras(b)]);
    out.push(parent.readBigUInt64BE(24));
  }
  return out;
}

// Computed with vLLM's own Python code path (cbor2.dumps(canonical=True) + hashlib.sha256, hash_block_tokens and
// init_none_hash as in vllm/v1/core/kv_cache_utils.py, low 64 bits as maybe_convert_block_hash keeps them):
//   parent = sha256_cbor(seed); for each block: parent = sha256_cbor((parent, tuple(block), extra_keys))
const MIXED_TOKENS = [
  ...range(0, 16),
  ...[200, 256, 257, 65535, 65536, 100000, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  ...[1234567, 999999, 50000, 60000, 70000, 80000, 90000, 128000, 128009, 2 ** 32, 15, 16, 17, 18, 19, 20],
  7,
  7,
  7,
];

describe('vllmBlockHashes', () => {
  it('matches digests computed with vLLM’s Python recipe', () => {
    expect(vllmBlockHashes(range(1, 17))).toEqual([3236607068019569386n]);
    expect(vllmBlockHashes(range(1, 33), { loraName: 'my-lora' })).toEqual([15444946753610453501n, 6571079245177515926n]);
    expect(vllmBlockHashes(MIXED_TOKENS, { noneHashSeed: '42' })).toEqual([2863503375995570957n, 7570622078567455819n, 12652225109304875127n]);
    expect(vllmBlockHashes(range(1, 33), { loraName: 'my-lora', cacheSalt: 'salt-xyz' })).toEqual([15807298759311414554n, 4709239784501925212n]);
    expect(vllmBlockHashes(range(1, 10), { blockSize: 4, noneHashSeed: '' })).toEqual([3122812028340818358n, 326515645919804222n]);
  });

  it('matches an independent CBOR encoding for every head width and the extra keys', () => {
    expect(vllmBlockHashes(MIXED_TOKENS, { noneHashSeed: '42' })).toEqual(reference(MIXED_TOKENS, 16, '42', () => null));
    const lora = 'adapter-ü-日本';
    expect(vllmBlockHashes(MIXED_TOKENS, { loraName: lora, cacheSalt: 's' })).toEqual(
      reference(MIXED_TOKENS, 16, '0', (b) => (b === 0 ? [lora, 's'] : [lora])),
    );
    // 24 tokens per block puts the array head in its one-byte-argument form, 300 in the two-byte form.
    const long = range(0, 600).map((i) => (i * 7919) % 130000);
    expect(vllmBlockHashes(long, { blockSize: 24 })).toEqual(reference(long, 24, '0', () => null));
    expect(vllmBlockHashes(long, { blockSize: 300, cacheSalt: 'x'.repeat(300) })).toEqual(
      reference(long, 300, '0', (b) => (b === 0 ? ['x'.repeat(300)] : null)),
    );
  });

  it('hashes full blocks only, each chained on its prefix', () => {
    expect(vllmBlockHashes(range(0, 15))).toEqual([]);
    const tokens = range(100, 148);
    const whole = vllmBlockHashes(tokens);
    expect(whole).toHaveLength(3);
    expect(vllmBlockHashes(tokens.slice(0, 40))).toEqual(whole.slice(0, 2));
    // Same second block after a different first block: a different hash.
    const other = [...range(0, 16), ...tokens.slice(16, 32)];
    expect(vllmBlockHashes(other)[1]).not.toBe(whole[1]);
  });

  it('separates seeds, adapters and salts, and keeps 64 bits', () => {
    const tokens = range(1, 17);
    const variants = [
      vllmBlockHashes(tokens)[0],
      vllmBlockHashes(tokens, { noneHashSeed: '1' })[0],
      vllmBlockHashes(tokens, { loraName: 'a' })[0],
      vllmBlockHashes(tokens, { loraName: 'b' })[0],
      vllmBlockHashes(tokens, { cacheSalt: 'c' })[0],
    ];
    expect(new Set(variants).size).toBe(variants.length);
    for (const hash of variants) expect(hash! >= 0n && hash! < 2n ** 64n).toBe(true);
    // An empty salt is no salt, as in vLLM (`if ... and request.cache_salt`).
    expect(vllmBlockHashes(tokens, { cacheSalt: '' })).toEqual(vllmBlockHashes(tokens));
  });

  it('rejects token ids CBOR could not carry as Python ints the way vLLM sees them', () => {
    expect(() => vllmBlockHashes([...range(0, 15), -1])).toThrow(RangeError);
    expect(() => vllmBlockHashes([...range(0, 15), 1.5])).toThrow(RangeError);
    expect(() => vllmBlockHashes(range(0, 16), { blockSize: 0 })).toThrow(RangeError);
  });

  it('hashes a 128K-token prompt in well under a second', () => {
    const tokens = Array.from({ length: 131_072 }, (_, i) => (i * 7919) % 128_000);
    vllmBlockHashes(tokens.slice(0, 4096));
    const started = performance.now();
    expect(vllmBlockHashes(tokens)).toHaveLength(8192);
    const ms = performance.now() - started;
    console.log(`vllmBlockHashes: 131072 tokens (8192 blocks) in ${ms.toFixed(1)} ms`);
    expect(ms).toBeLessThan(500);
  });
});
