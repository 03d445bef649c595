import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineAdapters } from '../../../adapters-controller/engine-adapters.js';
import type { EngineKind } from '../../../core/engine.js';
import { ApiError } from '../../../core/errors.js';
import { adapterRoutes } from '../../../engine-sidecar/adapter-api.js';
import { type RunningSim, startSim } from '../../../engine-sim/server.js';

// The adapter API in front of a simulated vLLM (in process), a fake SGLang that records what it is sent, a
// llama.cpp (no run-time adapters) and an engine that is not there.

interface Sent {
  path: string;
  body: unknown;
}

describe('sidecar adapter API', () => {
  let sim: RunningSim;
  let sglang: Server;
  let sglangUrl: string;
  const sent: Sent[] = [];
  const adapters = new EngineAdapters({ loadTimeoutMs: 5_000 });
  let draining = false;

  const app = (kind: EngineKind, url: () => string): FastifyInstance => {
    const a = Fastify({ logger: false });
    a.setErrorHandler((err: Error, _req, reply) => {
      const e = err instanceof ApiError ? err : new ApiError(500, err.message);
      void reply.code(e.status).send(e.toJSON());
    });
    adapterRoutes(a, { adapters, engine: () => ({ id: 'e1', url: url(), kind, models: ['m1'] }), draining: () => draining });
    return a;
  };

  beforeAll(async () => {
    sim = await startSim({ model: 'm1', zeroLatency: true });
    sglang = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        sent.push({ path: req.url ?? '', body: text === '' ? undefined : JSON.parse(text) });
        res.setHeader('content-type', 'application/json');
        if (req.url === '/unload_lora_adapter') {
          res.statusCode = 400;
          res.end(JSON.stringify({ success: false, error_message: "LoRA adapter 'x' is not loaded" }));
          return;
        }
        res.end(JSON.stringify({ success: true, error_message: '' }));
      });
    });
    await new Promise<void>((resolve) => sglang.listen(0, '127.0.0.1', resolve));
    sglangUrl = `http://127.0.0.1:${(sglang.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await sim.close();
    await new Promise<void>((resolve) => sglang.close(() => resolve()));
    await adapters.close();
  });

  it('loads and unloads on vLLM through its API, answering in one shape', async () => {
    const a = app('vllm', () => sim.url);
    const load = await a.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'sql', lora_path: '/adapters/sql' } });
    expect(load.statusCode).toBe(200);
    expect(load.json()).toEqual({ object: 'lora_adapter', lora_name: 'sql', lora_path: '/adapters/sql', status: 'loaded' });
    const models = (await (await fetch(`${sim.url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toContain('sql');

    const list = await a.inject({ method: 'GET', url: '/v1/lora_adapters' });
    expect(list.json()).toEqual({ object: 'list', data: [{ lora_name: 'sql', lora_path: '/adapters/sql', parent: 'm1' }] });

    const again = await a.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'sql', lora_path: '/adapters/sql' } });
    expect(again.statusCode).toBe(409);
    expect(again.json().error).toMatchObject({ code: 'adapter_already_loaded', type: 'invalid_request_error', param: 'lora_name' });

    const unload = await a.inject({ method: 'POST', url: '/v1/lora_adapter/unload', payload: { lora_name: 'sql' } });
    expect(unload.statusCode).toBe(200);
    expect(unload.json()).toMatchObject({ lora_name: 'sql', status: 'unloaded' });
    const missing = await a.inject({ method: 'POST', url: '/v1/lora_adapter/unload', payload: { lora_name: 'sql' } });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error).toMatchObject({ code: 'adapter_not_loaded', type: 'not_found_error' });
    await a.close();
  });

  it("translates to SGLang's paths", async () => {
    const a = app('sglang', () => sglangUrl);
    const load = await a.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'x', lora_path: '/p/x' } });
    expect(load.statusCode).toBe(200);
    const unload = await a.inject({ method: 'POST', url: '/v1/lora_adapter/unload', payload: { lora_name: 'x' } });
    expect(unload.statusCode).toBe(404);
    expect(sent).toEqual([
      { path: '/load_lora_adapter', body: { lora_name: 'x', lora_path: '/p/x' } },
      { path: '/unload_lora_adapter', body: { lora_name: 'x' } },
    ]);
    await a.close();
  });

  it('answers OpenAI-shaped errors: bad body, llama.cpp, unreachable engine, draining', async () => {
    const vllm = app('vllm', () => sim.url);
    const bad = await vllm.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'x' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toEqual({ error: { message: expect.stringContaining('lora_path'), type: 'invalid_request_error', param: 'lora_path', code: 'invalid_request' } });

    const llama = app('llamacpp', () => sim.url);
    const unsupported = await llama.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'x', lora_path: '/p' } });
    expect(unsupported.statusCode).toBe(501);
    expect(unsupported.json().error.code).toBe('adapters_unsupported');

    const gone = app('vllm', () => 'http://127.0.0.1:1');
    const unreachable = await gone.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'x', lora_path: '/p' } });
    expect(unreachable.statusCode).toBe(503);
    expect(unreachable.json().error).toMatchObject({ code: 'engine_unavailable', type: 'server_error' });

    draining = true;
    try {
      const refused = await vllm.inject({ method: 'POST', url: '/v1/lora_adapter/load', payload: { lora_name: 'x', lora_path: '/p' } });
      expect(refused.statusCode).toBe(503);
      expect(refused.json().error.code).toBe('draining');
    } finally {
      draining = false;
    }
    await Promise.all([vllm.close(), llama.close(), gone.close()]);
  });
});
