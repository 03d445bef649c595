import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, testKey, testModel, type Cluster } from '../helpers/cluster.js';

describe('the official openai client through the gateway', () => {
  let cluster: Cluster;
  let client: OpenAI;

  beforeAll(async () => {
    // One seed for both engines, so an answer does not depend on which engine gave it.
    cluster = await startCluster({ engines: 2, sim: { seed: 7 } });
    client = new OpenAI({ apiKey: testKey, baseURL: `${cluster.url}/v1`, maxRetries: 0 });
  });
  afterAll(() => cluster.close());

  it('answers a chat completion and names the engine that served it', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: testModel, messages: [{ role: 'user', content: 'Say something.' }], max_tokens: 7 })
      .withResponse();
    expect(data.object).toBe('chat.completion');
    expect(data.model).toBe(testModel);
    expect(typeof data.choices[0]!.message.content).toBe('string');
    expect(data.choices[0]!.message.content!.length).toBeGreaterThan(0);
    expect(data.usage!.completion_tokens).toBe(7);
    expect(data.usage!.prompt_tokens).toBeGreaterThan(0);
    expect(response.headers.get('x-switchyard-pod')).toMatch(/^sim-[01]$/);
    expect(response.headers.get('x-request-id')).toBeTruthy();
  });

  it('streams a chat completion chunk by chunk, with usage when asked', async () => {
    const stream = await client.chat.completions.create({
      model: testModel,
      messages: [{ role: 'user', content: 'Stream please.' }],
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chunks).toBeGreaterThanOrEqual(6);
    expect(text.length).toBeGreaterThan(0);
    expect(finish).toBe('length');
    expect(usage?.completion_tokens).toBe(6);
  });

  it('answers legacy completions, streamed and not', async () => {
    const plain = await client.completions.create({ model: testModel, prompt: 'Once upon a time', max_tokens: 5 });
    expect(plain.object).toBe('text_completion');
    expect(plain.usage!.completion_tokens).toBe(5);
    const stream = await client.completions.create({ model: testModel, prompt: 'Once upon a time', max_tokens: 5, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(plain.choices[0]!.text);
  });

  it('passes embeddings through', async () => {
    const res = await client.embeddings.create({ model: testModel, input: ['a', 'b'] });
    expect(res.data).toHaveLength(2);
    expect(res.data[0]!.embedding.length).toBeGreaterThan(0);
  });

  it('lists the models that healthy engines serve', async () => {
    const page = await client.models.list();
    expect(page.data.map((m) => m.id)).toEqual([testModel]);
  });

  it('ends a raw SSE stream with data: [DONE]', async () => {
    const res = await fetch(`${cluster.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: testModel, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: true }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await res.text();
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(text.split('\n\n').filter((e) => e.startsWith('data: {')).length).toBeGreaterThanOrEqual(3);
  });
});

describe('an engine that sends the whole stream at once', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({ engines: 1, sim: { zeroLatency: true } });
  });
  afterAll(() => cluster.close());

  it('is relayed to the end, every time', async () => {
    const client = new OpenAI({ apiKey: testKey, baseURL: `${cluster.url}/v1`, maxRetries: 0, timeout: 5_000 });
    for (let i = 0; i < 20; i++) {
      const stream = await client.chat.completions.create({ model: testModel, messages: [{ role: 'user', content: `short ${i}` }], max_tokens: 16, stream: true });
      let finish: string | null = null;
      for await (const chunk of stream) finish = chunk.choices[0]?.finish_reason ?? finish;
      expect(finish).toBe('length');
    }
  });
});
