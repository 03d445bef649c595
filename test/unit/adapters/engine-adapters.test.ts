import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineAdapterError, EngineAdapters, type AdapterEngineRef } from '../../../adapters-controller/engine-adapters.js';
import { startSim, type RunningSim } from '../../../engine-sim/server.js';

const MODEL = 'test-model';

async function rejection(p: Promise<unknown>): Promise<EngineAdapterError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EngineAdapterError);
  return err as EngineAdapterError;
}

describe('EngineAdapters against the simulated vLLM engine', () => {
  let sim: RunningSim;
  let slow: RunningSim;
  const client = new EngineAdapters({ loadTimeoutMs: 150 });
  const ref = (s: RunningSim, id = 'sim'): AdapterEngineRef => ({ id, url: s.url, kind: 'vllm', models: [MODEL] });

  beforeAll(async () => {
    sim = await startSim({ model: MODEL, maxLoras: 2, loraLoadMs: 200, timeScale: 20 });
    slow = await startSim({ model: MODEL, maxLoras: 2, loraLoadMs: 5_000 });
  });
  afterAll(async () => {
    await client.close();
    await sim?.close();
    await slow?.close();
  });

  it('loads, lists (parent and root) and unloads, telling "already loaded" and "not found" apart', async () => {
    expect(await client.list(ref(sim))).toEqual([]);
    await client.load(ref(sim), 'sql', '/adapters/sql');
    expect(await client.list(ref(sim))).toEqual([{ name: 'sql', path: '/adapters/sql', parent: MODEL }]);
    const again = await rejection(client.load(ref(sim), 'sql', '/adapters/sql'));
    expect(again).toMatchObject({ code: 'already_loaded', status: 400, engine: 'sim', operation: 'load', adapter: 'sql' });
    expect(again.engineMessage).toMatch(/already been loaded/);

    await client.load(ref(sim), 'chat', '/adapters/chat');
    const full = await rejection(client.load(ref(sim), 'third', '/adapters/third'));
    expect(full).toMatchObject({ code: 'rejected', status: 400 });
    expect(full.message).toMatch(/^engine "sim": load of adapter "third" failed \(400: Cannot load LoRA adapter 'third': 2 adapters are already resident \(max_loras=2\)/);

    expect(await rejection(client.unload(ref(sim), 'nope'))).toMatchObject({ code: 'not_loaded', status: 404 });
    await client.unload(ref(sim), 'sql');
    await client.unload(ref(sim), 'chat');
    expect(await client.list(ref(sim))).toEqual([]);
  });

  it('times out a load, and reports an engine that does not answer as unreachable', async () => {
    const started = Date.now();
    expect(await rejection(client.load(ref(slow), 'big', '/adapters/big'))).toMatchObject({ code: 'timeout', status: undefined });
    expect(Date.now() - started).toBeLessThan(2_000);
    const dead = await startSim({ model: MODEL });
    const url = dead.url;
    await dead.close();
    expect(await rejection(client.list({ id: 'dead', url, kind: 'vllm' }))).toMatchObject({ code: 'unreachable', operation: 'list' });
  });

  it('refuses llama.cpp loads (no run-time adapters) and lists none there', async () => {
    const llama: AdapterEngineRef = { id: 'l', url: sim.url, kind: 'llamacpp' };
    expect(await client.list(llama)).toEqual([]);
    expect(await rejection(client.load(llama, 'x', '/x'))).toMatchObject({ code: 'unsupported' });
  });
});

describe('EngineAdapters against SGLang-shaped answers', () => {
  const app = Fastify();
  const loaded = new Map<string, string>();
  const client = new EngineAdapters();
  let ref: AdapterEngineRef;

  beforeAll(async () => {
    // SGLang's shapes: LoRAUpdateResult {success, error_message, loaded_adapters}, 400 on failure.
    app.post('/load_lora_adapter', async (req, reply) => {
      const { lora_name, lora_path } = req.body as { lora_name: string; lora_path: string };
      if (loaded.has(lora_name)) {
        return reply.code(400).send({ success: false, error_message: `Failed to load LoRA adapter ${lora_name} because it is already loaded`, loaded_adapters: Object.fromEntries(loaded) });
      }
      if (lora_path === '/weird') return reply.code(200).send({ success: false, error_message: 'rank mismatch' });
      loaded.set(lora_name, lora_path);
      return { success: true, error_message: null, loaded_adapters: Object.fromEntries(loaded) };
    });
    app.post('/unload_lora_adapter', async (req, reply) => {
      const { lora_name } = req.body as { lora_name: string };
      if (!loaded.delete(lora_name)) return reply.code(400).send({ success: false, error_message: `LoRA adapter ${lora_name} is not loaded` });
      return { success: true, error_message: null, loaded_adapters: Object.fromEntries(loaded) };
    });
    app.get('/v1/models', async () => ({
      object: 'list',
      data: [{ id: 'qwen', object: 'model', root: 'qwen', parent: null }, ...[...loaded].map(([id, root]) => ({ id, object: 'model', root, parent: 'qwen' }))],
    }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    ref = { id: 'sgl', url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, kind: 'sglang', models: ['qwen'] };
  });
  afterAll(async () => {
    await client.close();
    await app.close();
  });

  it('loads, lists and unloads on the SGLang paths, with its messages', async () => {
    await client.load(ref, 'a', '/adapters/a');
    expect(await client.list(ref)).toEqual([{ name: 'a', path: '/adapters/a', parent: 'qwen' }]);
    expect(await rejection(client.load(ref, 'a', '/adapters/a'))).toMatchObject({ code: 'already_loaded', status: 400 });
    // A 200 saying success: false is a failure too.
    expect(await rejection(client.load(ref, 'b', '/weird'))).toMatchObject({ code: 'rejected', status: 200, engineMessage: 'rank mismatch' });
    await client.unload(ref, 'a');
    expect(await rejection(client.unload(ref, 'a'))).toMatchObject({ code: 'not_loaded' });
  });
});

describe('EngineAdapters through an engine\'s sidecar', () => {
  it('loads and unloads through the sidecar\'s adapter API when the engine has one', async () => {
    const { startSidecar } = await import('../../../engine-sidecar/sidecar.js');
    const sim = await startSim({ model: MODEL, maxLoras: 2, loraLoadMs: 0 });
    // Attached to the running sim: the sidecar starts nothing and counts the adapter calls it translates.
    const sidecar = await startSidecar({ engine: 'sim', enginePort: sim.port, host: '127.0.0.1', port: 0, supervisor: { healthIntervalMs: 50 }, log: () => {} });
    const seen: string[] = [];
    const spy = Fastify();
    // A stand-in for the sidecar's address that forwards to it and records the paths: the engine must not be called.
    spy.all('/*', async (request, reply) => {
      seen.push(`${request.method} ${request.url}`);
      const res = await fetch(`${sidecar.url}${request.url}`, { method: request.method, headers: { 'content-type': 'application/json' }, body: request.method === 'GET' ? undefined : JSON.stringify(request.body) });
      return reply.code(res.status).type(res.headers.get('content-type') ?? 'application/json').send(await res.text());
    });
    await spy.listen({ host: '127.0.0.1', port: 0 });
    const client = new EngineAdapters();
    try {
      expect(await sidecar.supervisor.waitHealthy(10_000)).toBe(true);
      const ref: AdapterEngineRef = { id: 'sim', url: sim.url, kind: 'vllm', models: [MODEL], sidecarUrl: `http://127.0.0.1:${(spy.server.address() as AddressInfo).port}` };
      await client.load(ref, 'sql', '/adapters/sql');
      expect(await client.list(ref)).toEqual([{ name: 'sql', path: '/adapters/sql', parent: MODEL }]);
      expect(await rejection(client.load(ref, 'sql', '/adapters/sql'))).toMatchObject({ code: 'already_loaded' });
      await client.unload(ref, 'sql');
      expect(await rejection(client.unload(ref, 'sql'))).toMatchObject({ code: 'not_loaded' });
      expect(seen).toEqual(['POST /v1/lora_adapter/load', 'POST /v1/lora_adapter/load', 'POST /v1/lora_adapter/unload', 'POST /v1/lora_adapter/unload']);
    } finally {
      await client.close();
      await spy.close();
      await sidecar.drain();
      await sim.close();
    }
  });
});
