import Fastify from 'fastify';
import type { EngineSpec } from '../../../core/engine.js';
import { EngineRegistry } from '../../../router/engines/registry.js';

/** What a fake engine answers; tests change these fields while it runs. */
export interface FakeEngineState {
  healthStatus: number;
  /** When set, /health waits for this promise before answering. */
  healthGate: Promise<void> | undefined;
  metricsStatus: number;
  metricsText: string;
  healthRequests: number;
  metricsRequests: number;
  completionRequests: number;
  /** TCP connections accepted. */
  connections: number;
  /** Resolves every /v1/completions request held open so far. */
  releaseCompletions: () => void;
}

export interface FakeEngine {
  readonly url: string;
  readonly state: FakeEngineState;
  close(): Promise<void>;
}

export function vllmMetrics(running: number, waiting: number, kvUsage: number): string {
  return [
    '# HELP vllm:num_requests_running Number of requests in model execution batches.',
    '# TYPE vllm:num_requests_running gauge',
    `vllm:num_requests_running{engine="0",model_name="llama"} ${running}`,
    '# HELP vllm:num_requests_waiting Number of requests waiting to be processed.',
    '# TYPE vllm:num_requests_waiting gauge',
    `vllm:num_requests_waiting{engine="0",model_name="llama"} ${waiting}`,
    '# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.',
    '# TYPE vllm:kv_cache_usage_perc gauge',
    `vllm:kv_cache_usage_perc{engine="0",model_name="llama"} ${kvUsage}`,
    '',
  ].join('\n');
}

/** A real HTTP server on 127.0.0.1 with an ephemeral port, speaking the engine endpoints the registry uses. */
export async function startFakeEngine(init: Partial<FakeEngineState> = {}): Promise<FakeEngine> {
  let held: (() => void)[] = [];
  const state: FakeEngineState = {
    healthStatus: 200,
    healthGate: undefined,
    metricsStatus: 200,
    metricsText: vllmMetrics(0, 0, 0),
    healthRequests: 0,
    metricsRequests: 0,
    completionRequests: 0,
    connections: 0,
    releaseCompletions: () => {
      for (const release of held) release();
      held = [];
    },
    ...init,
  };
  const app = Fastify();
  app.server.on('connection', () => state.connections++);
  app.get('/health', async (_req, reply) => {
    state.healthRequests++;
    if (state.healthGate !== undefined) await state.healthGate;
    return reply.code(state.healthStatus).send();
  });
  app.get('/metrics', async (_req, reply) => {
    state.metricsRequests++;
    return reply.code(state.metricsStatus).type('text/plain; version=0.0.4').send(state.metricsText);
  });
  app.post('/v1/completions', async () => {
    state.completionRequests++;
    await new Promise<void>((resolve) => held.push(resolve));
    return { id: 'cmpl-1', object: 'text_completion', choices: [] };
  });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url: address,
    state,
    close: async () => {
      state.releaseCompletions();
      await app.close();
    },
  };
}

/** A JSON completion request, as the proxy would send it. */
export const completion = {
  method: 'POST',
  path: '/v1/completions',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'llama', prompt: 'hi' }),
} as const;

/** Polls until `cond` holds; fails with `what` after timeoutMs. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * `count` fake engines named engine-0.. serving `model`, in a started EngineRegistry that probes and scrapes only
 * once (at start): a live registry whose counts a test drives by hand. Everything it opens is closed by `cleanups`.
 */
export async function startFakeFleet(count: number, model: string, cleanups: (() => Promise<unknown>)[]): Promise<{ registry: EngineRegistry; specs: EngineSpec[] }> {
  const specs: EngineSpec[] = [];
  for (let i = 0; i < count; i++) {
    const fake = await startFakeEngine();
    cleanups.push(() => fake.close());
    specs.push({ id: `engine-${i}`, url: fake.url, kind: 'vllm', models: [model], labels: {} });
  }
  const registry = new EngineRegistry(specs, { healthIntervalMs: 60_000, healthTimeoutMs: 2000, scrapeIntervalMs: 60_000, scrapeTimeoutMs: 2000 });
  cleanups.push(() => registry.stop());
  await registry.start();
  return { registry, specs };
}
