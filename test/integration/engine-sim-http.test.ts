import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSim, startSim } from '../../engine-sim/server.js';
import { parseEngineLoad } from '../../router/engines/engine-metrics.js';
import { tokenize } from '../../kvcache/tokenizers/approximate.js';

const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';

/** The parts of the sim's OpenAI-shaped JSON answers that these tests read. */
interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}
interface ChatCompletion {
  id: string;
  model: string;
  choices: { message: { content: string }; finish_reason: string }[];
  usage: Usage;
}
interface TextCompletion {
  id: string;
  choices: { text: string }[];
  usage: Usage;
}
interface ChatChunk {
  id: string;
  choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: Usage;
}
interface TextChunk {
  object: string;
  choices: { text: string; finish_reason: string | null }[];
}
interface ModelList {
  object: string;
  data: { id: string; created: number }[];
}
interface EmbeddingList<Embedding> {
  data: { embedding: Embedding }[];
  usage: { prompt_tokens: number };
}
interface ErrorBody {
  error: { message: string; type: string; code: number };
}

async function post(base: string, path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...init });
}

function chat(content: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: MODEL, messages: [{ role: 'user', content }], max_tokens: 8, ...extra };
}

/** The JSON payloads of an SSE body, with the literal [DONE] kept as a string. */
function sseFrames(text: string): unknown[] {
  expect(text.endsWith('\n\n')).toBe(true);
  return text
    .split('\n\n')
    .filter((frame) => frame !== '')
    .map((frame) => {
      expect(frame.startsWith('data: ')).toBe(true);
      const data = frame.slice('data: '.length);
      return data === '[DONE]' ? data : JSON.parse(data);
    });
}

/** Reads a streamed body until it ends or breaks; a broken stream is what the die fault must produce. */
async function readUntilBroken(response: Response): Promise<{ text: string; broken: boolean }> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text, broken: false };
      text += decoder.decode(value, { stream: true });
    }
  } catch {
    return { text, broken: true };
  }
}

function metricValue(text: string, name: string, labels = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    const series = line.slice(0, space);
    if (series.startsWith(`${name}{`) && series.includes(labels)) return Number(line.slice(space + 1));
  }
  return undefined;
}

async function metrics(sim: RunningSim): Promise<string> {
  const response = await fetch(`${sim.url}/metrics`);
  expect(response.status).toBe(200);
  return response.text();
}

const LONG_PROMPT = Array.from({ length: 60 }, (_, i) => `Sentence ${i} of a long shared system prompt about routing.`).join(' ');

describe('engine-sim over HTTP', () => {
  let sim: RunningSim;

  beforeAll(async () => {
    sim = await startSim({ model: MODEL, timeScale: 50, outputLenMean: 16, loraLoadMs: 100, maxLoras: 2 });
  });
  afterAll(async () => {
    await sim.close();
  });

  it('listens on loopback and reports its model', () => {
    expect(sim.url).toBe(`http://127.0.0.1:${sim.port}`);
    expect(sim.port).toBeGreaterThan(0);
    expect(sim.model).toBe(MODEL);
  });

  describe('chat completions', () => {
    it('answers non-streamed with max_tokens tokens, finish_reason length and usage', async () => {
      const response = await post(sim.url, '/v1/chat/completions', chat('Hello, how are you?', { max_tokens: 12 }));
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('application/json');
      const body = (await response.json()) as ChatCompletion;
      expect(body).toMatchObject({ object: 'chat.completion', model: MODEL, choices: [{ index: 0, message: { role: 'assistant' }, finish_reason: 'length' }] });
      expect(body.id).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
      const content: string = body.choices[0].message.content;
      expect(tokenize(content)).toHaveLength(12);
      expect(body.usage).toEqual({ prompt_tokens: body.usage.prompt_tokens, completion_tokens: 12, total_tokens: body.usage.prompt_tokens + 12, prompt_tokens_details: { cached_tokens: 0 } });
      expect(body.usage.prompt_tokens).toBeGreaterThan(5);
    });

    it('prefers max_completion_tokens, and stops by itself (finish_reason stop) when no limit is given', async () => {
      const limited = (await (await post(sim.url, '/v1/chat/completions', chat('Count', { max_tokens: 50, max_completion_tokens: 3 }))).json()) as ChatCompletion;
      expect(limited.usage.completion_tokens).toBe(3);
      const free = (await (await post(sim.url, '/v1/chat/completions', chat('Tell me a story', { max_tokens: undefined }))).json()) as ChatCompletion;
      expect(free.choices[0].finish_reason).toBe('stop');
      expect(free.usage.completion_tokens).toBeGreaterThanOrEqual(1);
      expect(free.usage.completion_tokens).toBeLessThanOrEqual(8 * 16);
    });

    it('streams SSE as vLLM: role first, finish_reason on the last token, usage chunk, then [DONE]', async () => {
      const request = chat('Stream this please', { max_tokens: 6, seed: 11, stream: true, stream_options: { include_usage: true } });
      const response = await post(sim.url, '/v1/chat/completions', request);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const frames = sseFrames(await response.text());
      expect(frames.at(-1)).toBe('[DONE]');
      const chunks = frames.slice(0, -1) as ChatChunk[];
      const id = chunks[0]!.id;
      for (const chunk of chunks) expect(chunk).toMatchObject({ id, object: 'chat.completion.chunk', model: MODEL });
      expect(chunks[0]!.choices).toEqual([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
      const tokenChunks = chunks.slice(1, -1);
      expect(tokenChunks).toHaveLength(6);
      expect(tokenChunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
      expect(tokenChunks.at(-1)!.choices[0]).toMatchObject({ finish_reason: 'length', stop_reason: null });
      const usageChunk = chunks.at(-1)!;
      expect(usageChunk.choices).toEqual([]);
      expect(usageChunk.usage).toMatchObject({ completion_tokens: 6, prompt_tokens_details: { cached_tokens: expect.any(Number) } });
      // Streaming and not streaming give the same text for the same prompt and seed.
      const streamed = tokenChunks.map((c) => c.choices[0].delta.content).join('');
      const whole = (await (await post(sim.url, '/v1/chat/completions', { ...request, stream: false, stream_options: undefined })).json()) as ChatCompletion;
      expect(streamed).toBe(whole.choices[0].message.content);
    });

    it('sends no usage chunk unless include_usage is set', async () => {
      const response = await post(sim.url, '/v1/chat/completions', chat('No usage', { max_tokens: 3, stream: true }));
      const frames = sseFrames(await response.text());
      expect(frames).toHaveLength(1 + 3 + 1);
      expect((frames.slice(0, -1) as ChatChunk[]).every((f) => f.usage === undefined && f.choices.length === 1)).toBe(true);
    });

    it('reports whole cached blocks in cached_tokens when a prompt repeats', async () => {
      const first = (await (await post(sim.url, '/v1/chat/completions', chat(LONG_PROMPT, { max_tokens: 2 }))).json()) as ChatCompletion;
      const second = (await (await post(sim.url, '/v1/chat/completions', chat(LONG_PROMPT, { max_tokens: 2 }))).json()) as ChatCompletion;
      const promptTokens = first.usage.prompt_tokens;
      expect(promptTokens).toBeGreaterThan(300);
      expect(first.usage.prompt_tokens_details.cached_tokens).toBe(0);
      expect(second.usage.prompt_tokens_details.cached_tokens).toBe(Math.floor((promptTokens - 1) / 16) * 16);
    });

    it('uses the X-Request-Id header as the completion id', async () => {
      const body = (await (await post(sim.url, '/v1/chat/completions', chat('hi'), { headers: { 'content-type': 'application/json', 'x-request-id': 'abc123' } })).json()) as ChatCompletion;
      expect(body.id).toBe('chatcmpl-abc123');
    });
  });

  describe('completions', () => {
    it('answers non-streamed with 16 tokens by default', async () => {
      const body = (await (await post(sim.url, '/v1/completions', { model: MODEL, prompt: 'Once upon a time' })).json()) as TextCompletion;
      expect(body).toMatchObject({ object: 'text_completion', choices: [{ index: 0, finish_reason: 'length', logprobs: null }], usage: { completion_tokens: 16 } });
      expect(body.id).toMatch(/^cmpl-/);
      expect(tokenize(body.choices[0].text)).toHaveLength(16);
    });

    it('accepts token ids as the prompt', async () => {
      const body = (await (await post(sim.url, '/v1/completions', { model: MODEL, prompt: [1, 2, 3, 4, 5], max_tokens: 2 })).json()) as TextCompletion;
      expect(body.usage.prompt_tokens).toBe(5);
    });

    it('streams text_completion chunks, the last with finish_reason, then usage and [DONE]', async () => {
      const response = await post(sim.url, '/v1/completions', { model: MODEL, prompt: 'Stream', max_tokens: 4, stream: true, stream_options: { include_usage: true } });
      const frames = sseFrames(await response.text());
      expect(frames).toHaveLength(4 + 1 + 1);
      const textChunks = frames.slice(0, 4) as TextChunk[];
      expect(textChunks.every((f) => f.object === 'text_completion' && typeof f.choices[0].text === 'string')).toBe(true);
      expect(textChunks[3]!.choices[0].finish_reason).toBe('length');
      expect(frames[4]).toMatchObject({ choices: [], usage: { completion_tokens: 4 } });
      expect(frames[5]).toBe('[DONE]');
    });
  });

  describe('errors in vLLM shape', () => {
    it('404s an unknown model', async () => {
      const response = await post(sim.url, '/v1/chat/completions', chat('hi', { model: 'gpt-17' }));
      expect(response.status).toBe(404);
      expect(await response.json()).toEqual({ error: { message: 'The model `gpt-17` does not exist.', type: 'NotFoundError', param: 'model', code: 404 } });
    });

    it('400s invalid bodies, malformed JSON and over-long requests', async () => {
      const missing = await post(sim.url, '/v1/chat/completions', { model: MODEL });
      expect(missing.status).toBe(400);
      expect(await missing.json()).toMatchObject({ error: { type: 'BadRequestError', param: 'messages', code: 400 } });

      const malformed = await fetch(`${sim.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":' });
      expect(malformed.status).toBe(400);
      expect(((await malformed.json()) as ErrorBody).error.code).toBe(400);

      const tooLong = await post(sim.url, '/v1/chat/completions', chat('hi', { max_tokens: 200_000 }));
      expect(tooLong.status).toBe(400);
      expect(((await tooLong.json()) as ErrorBody).error.message).toMatch(/maximum context length is 131072 tokens/);

      const orphanOptions = await post(sim.url, '/v1/chat/completions', chat('hi', { stream_options: { include_usage: true } }));
      expect(orphanOptions.status).toBe(400);
    });

    it('answers unknown routes as FastAPI does', async () => {
      const response = await fetch(`${sim.url}/v2/nothing`);
      expect(response.status).toBe(404);
      expect(await response.json()).toEqual({ detail: 'Not Found' });
    });
  });

  describe('models, health, embeddings', () => {
    it('lists the base model in vLLM shape', async () => {
      const body = (await (await fetch(`${sim.url}/v1/models`)).json()) as ModelList;
      expect(body.object).toBe('list');
      expect(body.data[0]).toMatchObject({ id: MODEL, object: 'model', owned_by: 'vllm', root: MODEL, parent: null, max_model_len: 131072 });
      expect(typeof body.data[0].created).toBe('number');
    });

    it('answers /health with an empty 200', async () => {
      const response = await fetch(`${sim.url}/health`);
      expect(response.status).toBe(200);
      expect(await response.text()).toBe('');
    });

    it('returns deterministic unit embeddings, as floats or base64 float32', async () => {
      const floats = (await (await post(sim.url, '/v1/embeddings', { model: MODEL, input: ['alpha', 'beta'] })).json()) as EmbeddingList<number[]>;
      expect(floats).toMatchObject({ object: 'list', model: MODEL, data: [{ index: 0, object: 'embedding' }, { index: 1, object: 'embedding' }] });
      const [alpha, beta] = floats.data.map((d: { embedding: number[] }) => d.embedding);
      expect(alpha).toHaveLength(256);
      expect(Math.hypot(...alpha)).toBeCloseTo(1, 5);
      expect(alpha).not.toEqual(beta);
      expect(floats.usage.prompt_tokens).toBe(4);
      const encoded = (await (await post(sim.url, '/v1/embeddings', { model: MODEL, input: 'alpha', encoding_format: 'base64', dimensions: 256 })).json()) as EmbeddingList<string>;
      const bytes = Buffer.from(encoded.data[0].embedding, 'base64');
      const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
      expect(decoded).toEqual(alpha);
    });
  });

  describe('LoRA adapters', () => {
    it('loads, serves, lists, refuses duplicates and excess, unloads, then 404s', async () => {
      const unknown = await post(sim.url, '/v1/chat/completions', chat('hi', { model: 'sql-lora' }));
      expect(unknown.status).toBe(404);

      const started = performance.now();
      const loaded = await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'sql-lora', lora_path: '/adapters/sql' });
      expect(loaded.status).toBe(200);
      expect(await loaded.text()).toBe("Success: LoRA adapter 'sql-lora' added successfully.");
      // 100 ms of engine time at time-scale 50.
      expect(performance.now() - started).toBeGreaterThanOrEqual(1);

      const models = (await (await fetch(`${sim.url}/v1/models`)).json()) as ModelList;
      expect(models.data[1]).toMatchObject({ id: 'sql-lora', object: 'model', owned_by: 'vllm', root: '/adapters/sql', parent: MODEL });

      const served = (await (await post(sim.url, '/v1/chat/completions', chat('SELECT', { model: 'sql-lora' }))).json()) as ChatCompletion;
      expect(served.model).toBe('sql-lora');

      const again = await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'sql-lora', lora_path: '/adapters/sql' });
      expect(again.status).toBe(400);
      expect(((await again.json()) as ErrorBody).error.message).toBe("The lora adapter 'sql-lora' has already been loaded.");

      const invalid = await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'no-path' });
      expect(invalid.status).toBe(400);

      expect((await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'second', lora_path: '/a/2' })).status).toBe(200);
      const excess = await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'third', lora_path: '/a/3' });
      expect(excess.status).toBe(400);
      expect(((await excess.json()) as ErrorBody).error.message).toMatch(/max_loras=2/);

      const unloaded = await post(sim.url, '/v1/unload_lora_adapter', { lora_name: 'sql-lora' });
      expect(unloaded.status).toBe(200);
      expect(await unloaded.text()).toBe("Success: LoRA adapter 'sql-lora' removed successfully.");
      const unloadAgain = await post(sim.url, '/v1/unload_lora_adapter', { lora_name: 'sql-lora' });
      expect(unloadAgain.status).toBe(404);
      expect(((await unloadAgain.json()) as ErrorBody).error.type).toBe('NotFoundError');
      const gone = await post(sim.url, '/v1/chat/completions', chat('SELECT', { model: 'sql-lora' }));
      expect(gone.status).toBe(404);
      expect(((await gone.json()) as ErrorBody).error.message).toBe('The model `sql-lora` does not exist.');
      await post(sim.url, '/v1/unload_lora_adapter', { lora_name: 'second' });
    });

    it('does not share cached prefixes between an adapter and the base model', async () => {
      await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'iso', lora_path: '/a/iso' });
      const prompt = `${LONG_PROMPT} isolation`;
      await post(sim.url, '/v1/chat/completions', chat(prompt, { max_tokens: 1 }));
      const viaAdapter = (await (await post(sim.url, '/v1/chat/completions', chat(prompt, { max_tokens: 1, model: 'iso' }))).json()) as ChatCompletion;
      expect(viaAdapter.usage.prompt_tokens_details.cached_tokens).toBe(0);
      await post(sim.url, '/v1/unload_lora_adapter', { lora_name: 'iso' });
    });

    it('reports adapters of running requests in lora_requests_info', async () => {
      await post(sim.url, '/v1/load_lora_adapter', { lora_name: 'busy', lora_path: '/a/busy' });
      const controller = new AbortController();
      try {
        const response = await post(sim.url, '/v1/chat/completions', chat('go on', { model: 'busy', max_tokens: 5000, stream: true }), { signal: controller.signal });
        await response.body!.getReader().read();
        expect(await metrics(sim)).toMatch(/vllm:lora_requests_info\{[^}]*running_lora_adapters="busy",waiting_lora_adapters=""\} /);
      } finally {
        controller.abort();
        await post(sim.url, '/v1/unload_lora_adapter', { lora_name: 'busy' });
      }
    });
  });

  it('works with the official openai client unchanged', async () => {
    const client = new OpenAI({ baseURL: `${sim.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    expect(completion.usage?.completion_tokens).toBe(4);
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usageSeen = false;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      usageSeen ||= chunk.usage?.completion_tokens === 4;
    }
    expect(tokenize(text)).toHaveLength(4);
    expect(usageSeen).toBe(true);
    const embedding = await client.embeddings.create({ model: MODEL, input: 'alpha' });
    expect(embedding.data[0]!.embedding).toHaveLength(256);
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toContain(MODEL);
    await expect(client.chat.completions.create({ model: 'missing', messages: [] })).rejects.toMatchObject({ status: 404 });
  });

  describe('metrics', () => {
    it('exposes vLLM metric names, each labelled with model_name', async () => {
      const text = await metrics(sim);
      const label = `model_name="${MODEL}"`;
      for (const name of [
        'vllm:num_requests_running',
        'vllm:num_requests_waiting',
        'vllm:kv_cache_usage_perc',
        'vllm:prefix_cache_queries_total',
        'vllm:prefix_cache_hits_total',
        'vllm:prompt_tokens_total',
        'vllm:generation_tokens_total',
        'vllm:num_preemptions_total',
        'vllm:time_to_first_token_seconds_bucket',
        'vllm:inter_token_latency_seconds_bucket',
        'vllm:e2e_request_latency_seconds_count',
        'vllm:lora_requests_info',
      ]) {
        expect(metricValue(text, name, label), name).toBeDefined();
      }
      expect(metricValue(text, 'vllm:request_success_total', `finished_reason="length"`)).toBeGreaterThan(0);
      expect(metricValue(text, 'vllm:prompt_tokens_total', label)).toBeGreaterThan(0);
      expect(metricValue(text, 'vllm:prefix_cache_hits_total', label)).toBeGreaterThan(0);
      expect(text).toMatch(/vllm:lora_requests_info\{model_name="[^"]+",max_lora="2",running_lora_adapters="",waiting_lora_adapters=""\} \d{10}/);
      const usage = metricValue(text, 'vllm:kv_cache_usage_perc', label)!;
      expect(usage).toBeGreaterThanOrEqual(0);
      expect(usage).toBeLessThanOrEqual(1);
    });

    it('exposes each sim\'s own start time as process_start_time_seconds, which the gateway reads', async () => {
      const before = Date.now() / 1000;
      const other = await startSim({ model: 'other-model', zeroLatency: true });
      try {
        const text = await metrics(other);
        const started = Number(/^process_start_time_seconds (\S+)$/m.exec(text)?.[1]);
        expect(started).toBeGreaterThanOrEqual(before);
        expect(started).toBeLessThanOrEqual(Date.now() / 1000);
        expect(parseEngineLoad('vllm', text, 0).startedAt).toBe(started);
        expect(parseEngineLoad('vllm', await metrics(sim), 0).startedAt).toBeLessThan(started);
      } finally {
        await other.close();
      }
    });

    it('keeps a separate registry per sim', async () => {
      const other = await startSim({ model: 'other-model', zeroLatency: true });
      try {
        await post(other.url, '/v1/completions', { model: 'other-model', prompt: 'x', max_tokens: 3 });
        const text = await metrics(other);
        expect(text).not.toContain(MODEL);
        expect(metricValue(text, 'vllm:generation_tokens_total', 'model_name="other-model"')).toBe(3);
      } finally {
        await other.close();
      }
    });

    it('counts an abandoned request as aborted and frees its slot', async () => {
      const controller = new AbortController();
      const response = await post(sim.url, '/v1/chat/completions', chat('long one', { max_tokens: 5000, stream: true }), { signal: controller.signal });
      const reader = response.body!.getReader();
      await reader.read();
      const before = metricValue(await metrics(sim), 'vllm:request_success_total', 'finished_reason="abort"')!;
      controller.abort();
      await expect.poll(async () => metricValue(await metrics(sim), 'vllm:request_success_total', 'finished_reason="abort"')).toBe(before + 1);
      expect(metricValue(await metrics(sim), 'vllm:num_requests_running')).toBe(0);
    });
  });

  describe('fault switches', () => {
    it('fails the next N inference requests with the given status, not /health or /metrics', async () => {
      const set = await post(sim.url, '/sim/faults', { failNext: 2, failStatus: 429 });
      expect(await set.json()).toMatchObject({ failNext: 2, failStatus: 429 });
      expect((await fetch(`${sim.url}/health`)).status).toBe(200);
      expect((await fetch(`${sim.url}/metrics`)).status).toBe(200);
      const first = await post(sim.url, '/v1/chat/completions', chat('a'));
      expect(first.status).toBe(429);
      expect(((await first.json()) as ErrorBody).error).toMatchObject({ type: 'RateLimitError', code: 429 });
      expect(await (await fetch(`${sim.url}/sim/faults`)).json()).toMatchObject({ failNext: 1 });
      expect((await post(sim.url, '/v1/embeddings', { input: 'a' })).status).toBe(429);
      expect((await post(sim.url, '/v1/chat/completions', chat('a'))).status).toBe(200);
    });

    it('rejects unknown or invalid fault settings', async () => {
      expect((await post(sim.url, '/sim/faults', { failNxt: 1 })).status).toBe(400);
      expect((await post(sim.url, '/sim/faults', { dieMode: 'explode' })).status).toBe(400);
    });

    it('hangs before the first byte until the client gives up', async () => {
      sim.setFaults({ hangBeforeFirstByte: true });
      try {
        const started = performance.now();
        await expect(post(sim.url, '/v1/chat/completions', chat('hang'), { signal: AbortSignal.timeout(300) })).rejects.toThrow();
        expect(performance.now() - started).toBeGreaterThanOrEqual(290);
        expect((await fetch(`${sim.url}/health`)).status).toBe(200);
      } finally {
        sim.setFaults({});
      }
    });

    it('hangs for hangMs, then answers', async () => {
      await post(sim.url, '/sim/faults', { hangBeforeFirstByte: true, hangMs: 250 });
      try {
        const started = performance.now();
        const response = await post(sim.url, '/v1/chat/completions', chat('late'));
        expect(response.status).toBe(200);
        expect(performance.now() - started).toBeGreaterThanOrEqual(245);
      } finally {
        const reset = await fetch(`${sim.url}/sim/faults`, { method: 'DELETE' });
        expect(await reset.json()).toMatchObject({ hangBeforeFirstByte: false, hangMs: 0 });
      }
    });

    it('dies mid-stream after K tokens by destroying the connection', async () => {
      sim.setFaults({ dieMidStreamAfter: 3 });
      try {
        const response = await post(sim.url, '/v1/chat/completions', chat('die', { max_tokens: 20, stream: true }));
        expect(response.status).toBe(200);
        const { text, broken } = await readUntilBroken(response);
        expect(broken).toBe(true);
        expect(text).not.toContain('[DONE]');
        const contents = (sseFrames(text) as ChatChunk[]).slice(1).map((f) => f.choices[0].delta.content);
        expect(contents).toHaveLength(3);
        // A non-streamed request just loses its connection.
        await expect(post(sim.url, '/v1/chat/completions', chat('die', { max_tokens: 20 }))).rejects.toThrow();
        // Requests too short to reach K tokens are unaffected.
        expect((await post(sim.url, '/v1/chat/completions', chat('short', { max_tokens: 3 }))).status).toBe(200);
      } finally {
        sim.setFaults({});
      }
    });

    it('slows every token down by slowMsPerToken of wall-clock time', async () => {
      sim.setFaults({ slowMsPerToken: 40 });
      try {
        const started = performance.now();
        const response = await post(sim.url, '/v1/chat/completions', chat('slow', { max_tokens: 5, stream: true }));
        const frames = sseFrames(await response.text());
        expect(frames.at(-1)).toBe('[DONE]');
        expect(performance.now() - started).toBeGreaterThanOrEqual(5 * 40 - 5);
      } finally {
        sim.setFaults({});
      }
      const started = performance.now();
      await post(sim.url, '/v1/chat/completions', chat('fast again', { max_tokens: 5 }));
      expect(performance.now() - started).toBeLessThan(150);
    });
  });
});

describe('engine-sim timing over HTTP', () => {
  it('reports engine-time latencies that follow the timing model, at any time scale', async () => {
    const sim = await startSim({ model: MODEL, timeScale: 50 });
    try {
      const body = (await (await post(sim.url, '/v1/completions', { model: MODEL, prompt: LONG_PROMPT, max_tokens: 5 })).json()) as TextCompletion;
      const prompt = body.usage.prompt_tokens;
      const text = await metrics(sim);
      const ttft = metricValue(text, 'vllm:time_to_first_token_seconds_sum')!;
      expect(ttft).toBeCloseTo((6.5 + prompt / 30 + (0.044 * prompt) / 1000) / 1000, 6);
      let itl = 0;
      for (let k = 1; k <= 4; k++) itl += (6.5 + (0.044 * (prompt + k)) / 1000) / 1000;
      expect(metricValue(text, 'vllm:inter_token_latency_seconds_sum')).toBeCloseTo(itl, 6);
      expect(metricValue(text, 'vllm:inter_token_latency_seconds_count')).toBe(4);
    } finally {
      await sim.close();
    }
  });

  it('takes real time at time-scale 1 and almost none at 50', async () => {
    const elapsed = async (timeScale: number): Promise<number> => {
      const sim = await startSim({ model: MODEL, timeScale });
      try {
        const started = performance.now();
        await (await post(sim.url, '/v1/chat/completions', chat('timing', { max_tokens: 30 }))).json();
        return performance.now() - started;
      } finally {
        await sim.close();
      }
    };
    expect(await elapsed(1)).toBeGreaterThanOrEqual(30 * 6.5);
    expect(await elapsed(50)).toBeLessThan(100);
  });

  it('queues requests beyond max_num_seqs, visible in the running and waiting gauges', async () => {
    const sim = await startSim({ model: MODEL, timeScale: 5, maxNumSeqs: 1 });
    try {
      const first = (await post(sim.url, '/v1/chat/completions', chat('first', { max_tokens: 100, stream: true }))).body!.getReader();
      await first.read();
      const second = post(sim.url, '/v1/chat/completions', chat('second', { max_tokens: 2 }));
      await expect.poll(async () => metricValue(await metrics(sim), 'vllm:num_requests_waiting')).toBe(1);
      const text = await metrics(sim);
      expect(metricValue(text, 'vllm:num_requests_running')).toBe(1);
      expect(metricValue(text, 'vllm:kv_cache_usage_perc')).toBeGreaterThan(0);
      expect((await second).status).toBe(200);
      await first.cancel();
    } finally {
      await sim.close();
    }
  });

  it('applies per-token faults in zero-latency mode too', async () => {
    const sim = await startSim({ model: MODEL, zeroLatency: true, faults: { dieMidStreamAfter: 2 } });
    try {
      const { text, broken } = await readUntilBroken(await post(sim.url, '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 10, stream: true }));
      expect(broken).toBe(true);
      expect(sseFrames(text)).toHaveLength(2);
      sim.setFaults({ slowMsPerToken: 30 });
      const started = performance.now();
      const frames = sseFrames(await (await post(sim.url, '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 4, stream: true })).text());
      expect(frames).toHaveLength(4 + 1);
      expect(performance.now() - started).toBeGreaterThanOrEqual(4 * 30 - 5);
    } finally {
      await sim.close();
    }
  });

  it('serves without waiting in zero-latency mode, prefix cache and streaming included', async () => {
    const sim = await startSim({ model: MODEL, zeroLatency: true });
    try {
      const started = performance.now();
      const first = (await (await post(sim.url, '/v1/chat/completions', chat(LONG_PROMPT, { max_tokens: 500 }))).json()) as ChatCompletion;
      expect(performance.now() - started).toBeLessThan(200);
      expect(first.usage.completion_tokens).toBe(500);
      const second = (await (await post(sim.url, '/v1/chat/completions', chat(LONG_PROMPT, { max_tokens: 2 }))).json()) as ChatCompletion;
      expect(second.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
      const stream = sseFrames(await (await post(sim.url, '/v1/chat/completions', chat('zero', { max_tokens: 3, stream: true }))).text());
      expect(stream).toHaveLength(1 + 3 + 1);
      expect(metricValue(await metrics(sim), 'vllm:time_to_first_token_seconds_sum')).toBe(0);
    } finally {
      await sim.close();
    }
  });
});

describe('switchyard sim command', () => {
  const simModule = fileURLToPath(new URL('../../dist/cli/sim.js', import.meta.url));
  const children: ChildProcess[] = [];

  beforeAll(() => {
    if (!existsSync(simModule)) throw new Error(`${simModule} is missing: run \`npm run build\` first (npm test does)`);
  });
  afterAll(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  function runCli(args: string[]): { child: ChildProcess; stdout: () => string; stderr: () => string } {
    const child = spawn(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(simModule)}).then((m) => m.runSimCommand(process.argv.slice(1)))`, '--', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    return { child, stdout: () => out, stderr: () => err };
  }

  async function listening(cli: ReturnType<typeof runCli>): Promise<string> {
    await expect.poll(cli.stdout, { timeout: 10_000 }).toMatch(/\n$/);
    const match = /^switchyard sim listening on (http:\/\/127\.0\.0\.1:\d+) model=cli-model\n$/.exec(cli.stdout());
    expect(match, cli.stdout()).not.toBeNull();
    return match![1]!;
  }

  it('prints one listening line, serves, and exits 0 on SIGTERM', async () => {
    const cli = runCli(['--model', 'cli-model', '--port', '0', '--time-scale', '50']);
    const url = await listening(cli);
    expect((await fetch(`${url}/health`)).status).toBe(200);
    cli.child.kill('SIGTERM');
    const [code] = await once(cli.child, 'exit');
    expect(code).toBe(0);
  });

  it('exits 2 naming the flag when a flag is bad', async () => {
    for (const args of [['--model', 'm', '--bogus'], ['--model', 'm', '--time-scale', 'fast'], ['--port', '0']]) {
      const cli = runCli(args);
      const [code] = await once(cli.child, 'exit');
      expect(code, args.join(' ')).toBe(2);
    }
    const cli = runCli(['--model', 'm', '--time-scale', 'fast']);
    await once(cli.child, 'exit');
    expect(cli.stderr()).toContain('--time-scale');
  });

  it('applies fault flags; die mode exit ends the process mid-stream', async () => {
    const cli = runCli(['--model', 'cli-model', '--time-scale', '50', '--die-mid-stream-after', '2', '--die-mode', 'exit']);
    const url = await listening(cli);
    const response = await post(url, '/v1/chat/completions', { model: 'cli-model', messages: [{ role: 'user', content: 'x' }], max_tokens: 10, stream: true });
    const { text, broken } = await readUntilBroken(response);
    expect(broken).toBe(true);
    expect(text).not.toContain('[DONE]');
    const [code] = cli.child.exitCode === null ? await once(cli.child, 'exit') : [cli.child.exitCode];
    expect(code).toBe(1);
  });
});
