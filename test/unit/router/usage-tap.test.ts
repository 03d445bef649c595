import { describe, expect, it } from 'vitest';
import { StreamUsageTap, usageFromBody } from '../../../router/usage-tap.js';

const content = (text: string) => `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"${text}"}}]}\n\n`;
const usageEvent =
  'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"total_tokens":19,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4}}}\n\n';
const done = 'data: [DONE]\n\n';

function run(tap: StreamUsageTap, chunks: string[]): string {
  let out = '';
  for (const c of chunks) out += tap.push(Buffer.from(c)).toString();
  return out + tap.flush().toString();
}

describe('usageFromBody', () => {
  it('reads the usage of a plain answer, cached tokens included', () => {
    const body = Buffer.from('{"id":"x","choices":[{"message":{"content":"a \\"usage\\": {"}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}}}');
    expect(usageFromBody(body)).toEqual({ promptTokens: 3, completionTokens: 5, cachedTokens: 2 });
  });

  it('gives undefined for an answer without usage or with a broken one', () => {
    expect(usageFromBody(Buffer.from('{"id":"x"}'))).toBeUndefined();
    expect(usageFromBody(Buffer.from('{"usage":null}'))).toBeUndefined();
    expect(usageFromBody(Buffer.from('{"usage":{"prompt_tokens":-1}}'))).toBeUndefined();
    expect(usageFromBody(Buffer.from('{"usage":{"prompt_tokens":1'))).toBeUndefined();
  });
});

describe('StreamUsageTap', () => {
  const stream = [content('Hel'), content('lo'), usageEvent, done];

  it('removes the usage event the client did not ask for and keeps its counts', () => {
    const tap = new StreamUsageTap(true);
    expect(run(tap, stream)).toBe(content('Hel') + content('lo') + done);
    expect(tap.usage).toEqual({ promptTokens: 12, completionTokens: 7, cachedTokens: 4 });
  });

  it('passes the usage event on when the client asked for it', () => {
    const tap = new StreamUsageTap(false);
    expect(run(tap, stream)).toBe(stream.join(''));
    expect(tap.usage?.completionTokens).toBe(7);
  });

  it('finds the usage event however the bytes are cut into chunks', () => {
    const whole = stream.join('');
    for (const size of [1, 3, 7, 50, whole.length]) {
      const chunks: string[] = [];
      for (let i = 0; i < whole.length; i += size) chunks.push(whole.slice(i, i + size));
      const tap = new StreamUsageTap(true);
      expect(run(tap, chunks)).toBe(content('Hel') + content('lo') + done);
      expect(tap.usage).toEqual({ promptTokens: 12, completionTokens: 7, cachedTokens: 4 });
    }
  });

  it('passes chunks that end on an event boundary through as the same buffer', () => {
    const tap = new StreamUsageTap(true);
    const chunk = Buffer.from(content('x'));
    expect(tap.push(chunk)).toBe(chunk);
  });

  it('keeps events that carry content and usage together (continuous usage stats)', () => {
    const both = 'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}\n\n';
    const tap = new StreamUsageTap(true);
    expect(run(tap, [both, done])).toBe(both + done);
    expect(tap.usage).toEqual({ promptTokens: 2, completionTokens: 1, cachedTokens: 0 });
  });
});
