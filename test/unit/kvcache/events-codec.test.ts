import { decode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import { decodeKvEventBatch, encodeKvEventBatch, KvEventDecodeError, normaliseBlockHash } from '../../../kvcache/events/codec.js';
import type { KvEventBatch } from '../../../kvcache/events/types.js';

// msgpack written byte by byte, as msgspec would write it, so the decoder is not only checked against its own encoder.
const bytes = (...parts: (number | number[] | Uint8Array)[]): number[] => parts.flatMap((p) => (typeof p === 'number' ? [p] : [...p]));
const str = (s: string): number[] => {
  const utf8 = [...Buffer.from(s, 'utf8')];
  return utf8.length < 32 ? [0xa0 | utf8.length, ...utf8] : [0xd9, utf8.length, ...utf8];
};
const arr = (...items: number[][]): number[] => [0x90 | items.length, ...items.flat()];
const map = (...pairs: [string, number[]][]): number[] => [0x80 | pairs.length, ...pairs.flatMap(([k, v]) => [...str(k), ...v])];
const nil = [0xc0];
const fixint = (n: number): number[] => [n];
const u16 = (n: number): number[] => [0xcd, n >> 8, n & 0xff];
const u32 = (n: number): number[] => [0xce, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
const u64 = (n: bigint): number[] => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return [0xcf, ...b];
};
const i64 = (n: bigint): number[] => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(n);
  return [0xd3, ...b];
};
const f64 = (x: number): number[] => {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(x);
  return [0xcb, ...b];
};
const bin = (data: number[]): number[] => [0xc4, data.length, ...data];
const payload = (b: number[]): Uint8Array => Uint8Array.from(b);

const TS = 1_763_000_000.25;
const BIG = 0xfedcba9876543210n; // past 2^53: must survive exactly
const DIGEST = Array.from({ length: 32 }, (_, i) => i + 1); // a 32-byte hash: its last 8 bytes are 25..32
const DIGEST_LOW64 = 0x191a1b1c1d1e1f20n;

describe('decodeKvEventBatch', () => {
  it('decodes the array layout of the first vLLM versions (no medium, no lora_name, no rank)', () => {
    const batch = decodeKvEventBatch(
      payload(
        arr(
          f64(TS),
          arr(
            arr(str('BlockStored'), arr(u64(BIG), fixint(7)), nil, arr(...Array.from({ length: 4 }, (_, i) => fixint(i + 1))), fixint(2), nil),
            arr(str('BlockRemoved'), arr(u64(BIG))),
            arr(str('AllBlocksCleared')),
          ),
        ),
      ),
    );
    expect(batch).toEqual({
      ts: TS,
      events: [
        { type: 'BlockStored', block_hashes: [BIG, 7n], parent_block_hash: null, token_ids: [1, 2, 3, 4], block_size: 2, lora_id: null, medium: null, lora_name: null },
        { type: 'BlockRemoved', block_hashes: [BIG], medium: null },
        { type: 'AllBlocksCleared' },
      ],
    });
  });

  it('decodes the current array layout, ignoring fields it does not know', () => {
    const extraKeys = arr(arr(str('my-lora')));
    const batch = decodeKvEventBatch(
      payload(
        arr(
          f64(TS),
          arr(
            arr(str('BlockStored'), arr(i64(-2n)), u64(BIG), arr(u32(128000), u16(300)), fixint(2), fixint(3), str('GPU'), str('my-lora'), extraKeys, fixint(0)),
            arr(str('BlockRemoved'), arr(fixint(9)), str('CPU'), fixint(0)),
          ),
          fixint(1),
        ),
      ),
    );
    expect(batch).toEqual({
      ts: TS,
      data_parallel_rank: 1,
      events: [
        {
          type: 'BlockStored',
          block_hashes: [2n ** 64n - 2n],
          parent_block_hash: BIG,
          token_ids: [128000, 300],
          block_size: 2,
          lora_id: 3,
          medium: 'GPU',
          lora_name: 'my-lora',
        },
        { type: 'BlockRemoved', block_hashes: [9n], medium: 'CPU' },
      ],
    });
  });

  it('decodes the map layout with hashes as 32-byte digests', () => {
    const batch = decodeKvEventBatch(
      payload(
        map(
          ['ts', f64(TS)],
          [
            'events',
            arr(
              map(
                ['type', str('BlockStored')],
                ['block_hashes', arr(bin(DIGEST))],
                ['parent_block_hash', bin([0xab, 0xcd])],
                ['token_ids', arr(fixint(1), fixint(2))],
                ['block_size', fixint(2)],
                ['lora_id', nil],
                ['medium', str('GPU')],
                ['lora_name', nil],
                ['group_idx', fixint(0)],
                ['kv_cache_spec_kind', str('full_attention')],
              ),
              map(['type', str('BlockRemoved')], ['block_hashes', arr(bin(DIGEST))], ['medium', str('GPU')]),
              map(['type', str('AllBlocksCleared')]),
            ),
          ],
          ['data_parallel_rank', fixint(0)],
        ),
      ),
    );
    expect(batch).toEqual({
      ts: TS,
      data_parallel_rank: 0,
      events: [
        { type: 'BlockStored', block_hashes: [DIGEST_LOW64], parent_block_hash: 0xabcdn, token_ids: [1, 2], block_size: 2, lora_id: null, medium: 'GPU', lora_name: null },
        { type: 'BlockRemoved', block_hashes: [DIGEST_LOW64], medium: 'GPU' },
        { type: 'AllBlocksCleared' },
      ],
    });
  });

  it('rejects garbage with an error naming what is wrong', () => {
    const cases: [number[], RegExp][] = [
      [[0xc1], /not one msgpack value/],
      [arr(f64(TS), arr(arr(str('BlockStored')))).slice(0, -3), /not one msgpack value/],
      [[...arr(f64(TS), arr()), 0x00], /not one msgpack value/],
      [str('hello'), /batch must be an array or a map/],
      [arr(str('x'), arr()), /^ts: expected a number/],
      [arr(f64(TS), fixint(3)), /^events: expected an array/],
      [arr(f64(TS), arr(arr(str('BlockEvicted'), arr()))), /events\[0\]: unknown event tag "BlockEvicted"/],
      [arr(f64(TS), arr(map(['block_hashes', arr()]))), /events\[0\]\.type: unknown event tag nothing/],
      [arr(f64(TS), arr(arr(str('BlockRemoved')))), /events\[0\]\.block_hashes: expected an array, got nothing/],
      [arr(f64(TS), arr(arr(str('BlockRemoved'), arr(fixint(1), str('x'))))), /events\[0\]\.block_hashes\[1\]: expected an integer or non-empty bytes/],
      [arr(f64(TS), arr(arr(str('BlockStored'), arr(), nil, arr(), nil, nil))), /events\[0\]\.block_size: expected an integer, got nil/],
      [arr(f64(TS), arr(fixint(4))), /events\[0\]: expected an array or a map/],
    ];
    for (const [input, message] of cases) {
      expect(() => decodeKvEventBatch(payload(input)), message.source).toThrow(KvEventDecodeError);
      expect(() => decodeKvEventBatch(payload(input))).toThrow(message);
    }
  });
});

describe('normaliseBlockHash', () => {
  it('keeps the low 64 bits of ints and the last 8 bytes of byte strings', () => {
    expect(normaliseBlockHash(5)).toBe(5n);
    expect(normaliseBlockHash(-1)).toBe(2n ** 64n - 1n);
    expect(normaliseBlockHash(2n ** 64n + 3n)).toBe(3n);
    expect(normaliseBlockHash(Uint8Array.from(DIGEST))).toBe(DIGEST_LOW64);
    expect(normaliseBlockHash(Uint8Array.from([1, 0]))).toBe(256n);
    expect(() => normaliseBlockHash(new Uint8Array(0))).toThrow(KvEventDecodeError);
    expect(() => normaliseBlockHash(1.5)).toThrow(KvEventDecodeError);
  });
});

describe('encodeKvEventBatch', () => {
  const batch: KvEventBatch = {
    ts: TS,
    data_parallel_rank: 0,
    events: [
      { type: 'BlockStored', block_hashes: [BIG, 12n], parent_block_hash: 2n ** 64n - 1n, token_ids: [1, 2, 3, 4], block_size: 2, lora_id: null, medium: 'GPU', lora_name: 'a' },
      { type: 'BlockRemoved', block_hashes: [BIG], medium: 'GPU' },
      { type: 'AllBlocksCleared' },
    ],
  };

  it('writes the array layout positionally, tag first, as msgspec array_like does', () => {
    const raw = decode(encodeKvEventBatch(batch, { encoding: 'array' }), { useBigInt64: true });
    expect(raw).toEqual([
      TS,
      [
        ['BlockStored', [BIG, 12], 2n ** 64n - 1n, [1, 2, 3, 4], 2, null, 'GPU', 'a'],
        ['BlockRemoved', [BIG], 'GPU'],
        ['AllBlocksCleared'],
      ],
      0,
    ]);
  });

  it('writes the map layout with the tag under "type"', () => {
    const raw = decode(encodeKvEventBatch(batch, { encoding: 'map' }), { useBigInt64: true });
    expect(raw).toEqual({
      ts: TS,
      events: [
        { type: 'BlockStored', block_hashes: [BIG, 12], parent_block_hash: 2n ** 64n - 1n, token_ids: [1, 2, 3, 4], block_size: 2, lora_id: null, medium: 'GPU', lora_name: 'a' },
        { type: 'BlockRemoved', block_hashes: [BIG], medium: 'GPU' },
        { type: 'AllBlocksCleared' },
      ],
      data_parallel_rank: 0,
    });
  });

  it('round-trips through both layouts, with and without a rank', () => {
    for (const encoding of ['array', 'map'] as const) {
      expect(decodeKvEventBatch(encodeKvEventBatch(batch, { encoding }))).toEqual(batch);
      const { data_parallel_rank: _, ...noRank } = batch;
      expect(decodeKvEventBatch(encodeKvEventBatch(noRank, { encoding }))).toEqual(noRank);
    }
  });
});
