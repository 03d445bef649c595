/**
 * The engine's own token counts, read off its answers as they pass: the whole body for a plain answer, the
 * usage event for a stream. The gateway asks engines for that event (stream_options.include_usage) even when
 * the client did not, to correct token reservations and record usage; then the tap removes it from the stream.
 */
export interface TokenUsage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
}

const usageKey = Buffer.from('"usage":');
const usageObject = Buffer.from('"usage":{');
const eventEnd = Buffer.from('\n\n');
const dataPrefix = Buffer.from('data:');

/** The usage object of a JSON answer (OpenAI puts it last, so the search starts from the end), or undefined. */
export function usageFromBody(body: Buffer): TokenUsage | undefined {
  const at = body.lastIndexOf(usageKey);
  if (at < 0) return undefined;
  return parseUsageAt(body, at + usageKey.length);
}

/**
 * Watches a stream's SSE events for the usage event. Events are only inspected whole: a chunk that ends inside an
 * event is held back until the rest arrives, which engines make rare by writing one event per chunk.
 */
export class StreamUsageTap {
  usage: TokenUsage | undefined;
  readonly #strip: boolean;
  #carry: Buffer | undefined;

  /** `strip`: drop the usage event (the client did not ask for it). */
  constructor(strip: boolean) {
    this.#strip = strip;
  }

  /** What to write to the client for this chunk: the chunk itself unless part of it is held back or removed. */
  push(chunk: Buffer): Buffer {
    let data = this.#carry === undefined ? chunk : Buffer.concat([this.#carry, chunk]);
    this.#carry = undefined;
    if (!endsOnEventBoundary(data)) {
      const complete = data.lastIndexOf(eventEnd);
      if (complete < 0) {
        this.#carry = data;
        return empty;
      }
      this.#carry = data.subarray(complete + eventEnd.length);
      data = data.subarray(0, complete + eventEnd.length);
    }
    return data.indexOf(usageObject) < 0 ? data : this.#scan(data);
  }

  /** Whatever is still held back, at the end of the stream. */
  flush(): Buffer {
    const rest = this.#carry ?? empty;
    this.#carry = undefined;
    return rest.indexOf(usageObject) < 0 ? rest : this.#scan(rest);
  }

  #scan(events: Buffer): Buffer {
    let at = events.indexOf(usageObject);
    while (at >= 0) {
      const start = events.lastIndexOf(dataPrefix, at);
      const endAt = events.indexOf(eventEnd, at);
      const end = endAt < 0 ? events.length : endAt + eventEnd.length;
      const usage = start < 0 ? undefined : parseUsageAt(events, at + usageKey.length);
      if (usage !== undefined) {
        this.usage = usage;
        // The usage-only event has no choices; an event that also carries content (continuous usage) stays.
        if (this.#strip && isUsageOnly(events.subarray(start, end))) {
          events = Buffer.concat([events.subarray(0, start), events.subarray(end)]);
          at = events.indexOf(usageObject, start);
          continue;
        }
      }
      at = events.indexOf(usageObject, end);
    }
    return events;
  }
}

const empty = Buffer.alloc(0);

function endsOnEventBoundary(data: Buffer): boolean {
  return data.length >= 2 && data[data.length - 1] === 0x0a && data[data.length - 2] === 0x0a;
}

const noChoices = Buffer.from('"choices":[]');
const noChoicesSpaced = Buffer.from('"choices": []');

function isUsageOnly(event: Buffer): boolean {
  return event.indexOf(noChoices) >= 0 || event.indexOf(noChoicesSpaced) >= 0;
}

/** Parses the JSON object starting at `from` (after `"usage":`): braces are counted, there are no strings with braces in it. */
function parseUsageAt(buf: Buffer, from: number): TokenUsage | undefined {
  let i = from;
  while (i < buf.length && (buf[i] === 0x20 || buf[i] === 0x0a || buf[i] === 0x0d || buf[i] === 0x09)) i++;
  if (buf[i] !== 0x7b) return undefined;
  let depth = 0;
  let end = -1;
  for (let j = i; j < buf.length; j++) {
    const c = buf[j];
    if (c === 0x7b) depth++;
    else if (c === 0x7d && --depth === 0) {
      end = j + 1;
      break;
    }
  }
  if (end < 0) return undefined;
  let value: { prompt_tokens?: unknown; completion_tokens?: unknown; prompt_tokens_details?: { cached_tokens?: unknown } | null };
  try {
    value = JSON.parse(buf.toString('utf8', i, end)) as typeof value;
  } catch {
    return undefined;
  }
  const prompt = count(value.prompt_tokens);
  if (prompt === undefined) return undefined;
  return { promptTokens: prompt, completionTokens: count(value.completion_tokens) ?? 0, cachedTokens: count(value.prompt_tokens_details?.cached_tokens) ?? 0 };
}

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined;
}
