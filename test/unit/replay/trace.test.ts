import { describe, expect, it } from 'vitest';
import { formatTrace, parseTrace } from '../../../bench/replay/trace.js';

describe('Mooncake trace parsing', () => {
  it('reads one request a line, skipping blank lines, in arrival order', () => {
    const text = [
      '{"timestamp": 40, "input_length": 600, "output_length": 5, "hash_ids": [2, 3]}',
      '',
      '{"timestamp": 0, "input_length": 512, "output_length": 1, "hash_ids": [0]}',
      '',
    ].join('\n');
    expect(parseTrace(text)).toEqual([
      { timestampMs: 0, inputLength: 512, outputLength: 1, hashIds: [0] },
      { timestampMs: 40, inputLength: 600, outputLength: 5, hashIds: [2, 3] },
    ]);
  });

  it('names the first bad line and what is wrong with it', () => {
    const ok = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}';
    expect(() => parseTrace(`${ok}\nnot json`)).toThrow('trace line 2: not JSON');
    expect(() => parseTrace('[1, 2]')).toThrow('trace line 1: not a JSON object');
    expect(() => parseTrace('{"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [0]}')).toThrow(/timestamp must be a number >= 0/);
    expect(() => parseTrace('{"timestamp": 0, "input_length": 1.5, "output_length": 1, "hash_ids": [0]}')).toThrow(/input_length must be a positive integer/);
    expect(() => parseTrace('{"timestamp": 0, "input_length": 10, "output_length": 0, "hash_ids": [0]}')).toThrow(/output_length/);
    expect(() => parseTrace('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [-1]}')).toThrow(/hash_ids/);
    expect(() => parseTrace('{"timestamp": 0, "input_length": 1025, "output_length": 1, "hash_ids": [0, 1]}')).toThrow(
      'input_length 1025 is longer than its 2 blocks of 512 tokens',
    );
  });

  it('writes what it reads', () => {
    const requests = [
      { timestampMs: 0, inputLength: 700, outputLength: 3, hashIds: [0, 1] },
      { timestampMs: 12.5, inputLength: 512, outputLength: 9, hashIds: [0] },
    ];
    expect(parseTrace(formatTrace(requests))).toEqual(requests);
  });
});
