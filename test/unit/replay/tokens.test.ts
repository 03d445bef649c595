import { describe, expect, it } from 'vitest';
import { blockTokens, PromptHasher, promptTokens, routerBlockHashes } from '../../../bench/replay/tokens.js';
import type { TraceRequest } from '../../../bench/replay/trace.js';
import { blockHashes } from '../../../engine-sim/prefix-cache.js';
import { blockNamespace, promptBlockHashes } from '../../../kvcache/block-hash.js';

const req = (inputLength: number, hashIds: number[]): TraceRequest => ({ timestampMs: 0, inputLength, outputLength: 1, hashIds });

describe('prompt synthesis', () => {
  it('gives each block id the same 512 tokens every time, and different ids different tokens', () => {
    expect(blockTokens(42)).toEqual(blockTokens(42));
    expect(blockTokens(42)).toHaveLength(512);
    expect(blockTokens(42)).not.toEqual(blockTokens(43));
    // Large ids (the Mooncake trace's go past 2^16) stay distinct too.
    expect(blockTokens(2 ** 40)).not.toEqual(blockTokens(0));
  });

  it('builds a prompt from its blocks, cutting the last one at input_length', () => {
    const tokens = promptTokens(req(700, [5, 9]));
    expect(tokens).toHaveLength(700);
    expect(tokens.subarray(0, 512)).toEqual(blockTokens(5));
    expect(tokens.subarray(512)).toEqual(blockTokens(9).subarray(0, 188));
  });

  it('shares exactly the leading blocks two requests share', () => {
    const a = promptTokens(req(1536, [1, 2, 3]));
    const b = promptTokens(req(1536, [1, 2, 4]));
    expect(a.subarray(0, 1024)).toEqual(b.subarray(0, 1024));
    expect(a.subarray(1024)).not.toEqual(b.subarray(1024));
  });

  it("hashes like the engine (engine-sim's 16-token blocks) and like the router (kvcache's blocks)", () => {
    const hasher = new PromptHasher(16);
    const namespace = { blockSize: 64, namespace: blockNamespace('m') };
    for (const r of [req(1536, [1, 2, 3]), req(1300, [1, 2, 7]), req(40, [1])]) {
      const tokens = promptTokens(r);
      expect(hasher.hashes(r)).toEqual(blockHashes(tokens, 16));
      expect(routerBlockHashes(r, namespace)).toEqual(promptBlockHashes(tokens, namespace));
    }
  });

  it('gives shared prefixes the same hashes and diverges after them', () => {
    const hasher = new PromptHasher(16);
    const a = hasher.hashes(req(1536, [1, 2, 3]));
    const b = hasher.hashes(req(1200, [1, 2, 4]));
    expect(a).toHaveLength(96);
    expect(b).toHaveLength(75);
    expect(b.slice(0, 64)).toEqual(a.slice(0, 64));
    expect(b[64]).not.toBe(a[64]);
    // The same block id under a different parent is a different prefix: no shared hash.
    const c = hasher.hashes(req(512, [2]));
    expect(a).not.toContain(c[0]);
  });
});
