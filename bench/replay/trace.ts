/**
 * Mooncake-format traces (kvcache-ai/Mooncake, FAST'25 release): one JSON object a line,
 *
 *   {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]}
 *
 * `timestamp` is the arrival in ms from the start of the trace, `input_length` and `output_length` are tokens,
 * and `hash_ids` name the prompt's consecutive 512-token blocks: two requests whose lists start with the same ids
 * share that prefix. The last block may be partial (input_length decides where the prompt ends).
 */

export const TRACE_BLOCK_TOKENS = 512;

export interface TraceRequest {
  readonly timestampMs: number;
  readonly inputLength: number;
  readonly outputLength: number;
  readonly hashIds: readonly number[];
}

/** Parses a whole trace; throws naming the first bad line. Blank lines are skipped. */
export function parseTrace(text: string): TraceRequest[] {
  const requests: TraceRequest[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    try {
      requests.push(parseLine(line));
    } catch (err) {
      throw new Error(`trace line ${i + 1}: ${(err as Error).message}`);
    }
  }
  // The replayer walks arrivals in order; traces are sorted, but a hand-made or concatenated one may not be.
  requests.sort((a, b) => a.timestampMs - b.timestampMs);
  return requests;
}

function parseLine(line: string): TraceRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new Error('not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not a JSON object');
  const obj = raw as Record<string, unknown>;
  const timestampMs = number(obj, 'timestamp', (n) => n >= 0);
  const inputLength = number(obj, 'input_length', (n) => Number.isInteger(n) && n >= 1);
  const outputLength = number(obj, 'output_length', (n) => Number.isInteger(n) && n >= 1);
  const ids = obj['hash_ids'];
  if (!Array.isArray(ids) || !ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    throw new Error('hash_ids must be an array of non-negative integers');
  }
  if (inputLength > ids.length * TRACE_BLOCK_TOKENS) {
    throw new Error(`input_length ${inputLength} is longer than its ${ids.length} blocks of ${TRACE_BLOCK_TOKENS} tokens`);
  }
  return { timestampMs, inputLength, outputLength, hashIds: ids as number[] };
}

function number(obj: Record<string, unknown>, key: string, valid: (n: number) => boolean): number {
  const value = obj[key];
  if (typeof value !== 'number' || !Number.isFinite(value) || !valid(value)) {
    throw new Error(`${key} must be ${key === 'timestamp' ? 'a number >= 0' : 'a positive integer'}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** The trace as Mooncake-format JSONL, one request a line, as the generators write it. */
export function formatTrace(requests: readonly TraceRequest[]): string {
  return requests
    .map((r) =>
      JSON.stringify({ timestamp: r.timestampMs, input_length: r.inputLength, output_length: r.outputLength, hash_ids: r.hashIds }),
    )
    .join('\n')
    .concat('\n');
}
