/**
 * A simulated vLLM engine behind its own HTTP server: vLLM's OpenAI-compatible API, /health, /metrics, runtime
 * LoRA loading, and the simulator's fault switches at /sim/faults. Each startSim() call is an independent engine
 * (own port, timing model, prefix cache, metrics registry), so dev mode can run several in one process.
 */

import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import { EngineLoop } from './engine-loop.js';
import { SimError } from './errors.js';
import { type FaultSettings, FaultState } from './faults.js';
import type { KvEventEncoding } from '../kvcache/events/types.js';
import type { Generation } from './generation.js';
import { handleEmbeddings, handleGeneration, type InferenceContext } from './inference.js';
import { startSimKvEvents } from './kv-events.js';
import { LoraRegistry } from './lora-registry.js';
import { createSimMetrics } from './metrics.js';
import { loadLoraSchema, parseBody, unloadLoraSchema } from './schemas.js';
import { DEFAULT_TIMING, TimingModel, type TimingParams } from './timing-model.js';

export interface SimOptions extends Partial<Omit<TimingParams, 'kvCapacityTokens'>> {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
  /** The served model name; requests must name it or a loaded adapter. */
  model: string;
  /** Engine time runs this many times faster than wall-clock time. Default 1. */
  timeScale?: number;
  /** Answer at once, bypassing the timing model's clock (prefix cache and counters still work). Default false. */
  zeroLatency?: boolean;
  /** Default 440000. */
  kvCapacityTokens?: number;
  /** Default 4. */
  maxLoras?: number;
  /** Engine time to load an adapter, scaled by timeScale. Default 200. */
  loraLoadMs?: number;
  /** Mean answer length when a request sets no max_tokens. Default 128. */
  outputLenMean?: number;
  /** Cap on that sampled length. Default 8 x outputLenMean. */
  outputLenMax?: number;
  /** Context window reported in /v1/models and enforced; never more than the KV capacity. Default 131072. */
  maxModelLen?: number;
  faults?: Partial<FaultSettings>;
  /** Mixed into every output seed: differently seeded sims answer the same prompt differently. Default 0. */
  seed?: number;
  /**
   * Publish KV events as vLLM does (--kv-events-config with the zmq publisher): a PUB socket bound here, e.g.
   * tcp://127.0.0.1:5557, port * for any free one. Block hashes are vLLM's sha256_cbor ones with PYTHONHASHSEED=0.
   * Default: no events.
   */
  kvEventsEndpoint?: string;
  /** Topic of every event message. Default ''. */
  kvEventsTopic?: string;
  /** msgpack layout: positional arrays (msgspec array_like) or maps. Default 'array'. */
  kvEventsEncoding?: KvEventEncoding;
}

export interface RunningSim {
  /** http://127.0.0.1:PORT (the host, when bound to a specific non-loopback address). */
  readonly url: string;
  readonly port: number;
  readonly model: string;
  /** The engine's KV-cache capacity in tokens. */
  readonly kvCapacityTokens: number;
  /** The KV events PUB endpoint actually bound, when publishing. */
  readonly kvEventsEndpoint: string | undefined;
  /** Replaces all faults; fields left out are off (see FaultSettings). */
  setFaults(faults: Partial<FaultSettings>): void;
  close(): Promise<void>;
}

export const SIM_DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  timeScale: 1,
  kvCapacityTokens: DEFAULT_TIMING.kvCapacityTokens,
  maxLoras: 4,
  loraLoadMs: 200,
  outputLenMean: 128,
  maxModelLen: 131_072,
  seed: 0,
} as const;

// Long-context traces post prompts of hundreds of thousands of tokens.
const BODY_LIMIT_BYTES = 64 * 1024 * 1024;

export async function startSim(opts: SimOptions): Promise<RunningSim> {
  if (typeof opts.model !== 'string' || opts.model === '') throw new RangeError('startSim: model is required');
  const timeScale = opts.timeScale ?? SIM_DEFAULTS.timeScale;
  const zeroLatency = opts.zeroLatency ?? false;
  const maxLoras = opts.maxLoras ?? SIM_DEFAULTS.maxLoras;
  const loraLoadMs = opts.loraLoadMs ?? SIM_DEFAULTS.loraLoadMs;
  const outputLenMean = opts.outputLenMean ?? SIM_DEFAULTS.outputLenMean;
  const outputLenMax = opts.outputLenMax ?? 8 * outputLenMean;
  requirePositive('timeScale', timeScale);
  requirePositive('outputLenMean', outputLenMean);
  requirePositive('outputLenMax', outputLenMax);
  if (!(Number.isInteger(maxLoras) && maxLoras >= 0)) throw new RangeError(`startSim: maxLoras must be a non-negative integer, got ${maxLoras}`);
  if (!(loraLoadMs >= 0)) throw new RangeError(`startSim: loraLoadMs must be >= 0, got ${loraLoadMs}`);

  const kvEventsEncoding = opts.kvEventsEncoding ?? 'array';
  if (kvEventsEncoding !== 'array' && kvEventsEncoding !== 'map') throw new RangeError(`startSim: kvEventsEncoding must be array or map, got ${kvEventsEncoding}`);

  const kvCapacityTokens = opts.kvCapacityTokens ?? SIM_DEFAULTS.kvCapacityTokens;
  const timing = new TimingModel(
    { ...definedTimingOverrides(opts), kvCapacityTokens },
    { recordCacheEvents: opts.kvEventsEndpoint !== undefined },
  );
  const maxModelLen = Math.min(opts.maxModelLen ?? SIM_DEFAULTS.maxModelLen, timing.maxSequenceTokens);
  requirePositive('maxModelLen', maxModelLen);
  const faults = new FaultState();
  faults.set(opts.faults ?? {});
  const loras = new LoraRegistry(maxLoras, () => (zeroLatency ? Promise.resolve() : sleep(loraLoadMs / timeScale)));
  const metrics = createSimMetrics({ modelName: opts.model, timing, maxLoras });
  const generations = new Map<string, Generation>();
  const kvEvents =
    opts.kvEventsEndpoint === undefined
      ? undefined
      : await startSimKvEvents({ endpoint: opts.kvEventsEndpoint, topic: opts.kvEventsTopic, encoding: kvEventsEncoding, blockSize: timing.params.blockSize });
  const loop = zeroLatency
    ? undefined
    : new EngineLoop(timing, timeScale, (events, cacheEvents) => {
        // Before the tokens go out: a client that sees its answer can count on the router having been told.
        kvEvents?.publish(cacheEvents);
        for (const event of events) {
          const generation = generations.get(event.id);
          if (generation === undefined) continue;
          if (event.type === 'finished') generations.delete(event.id);
          generation.onEngineEvent(event);
        }
      });
  const ctx: InferenceContext = {
    model: opts.model,
    limits: { maxModelLen, blockSize: timing.params.blockSize, outputLenMean, outputLenMax, simSeed: opts.seed ?? SIM_DEFAULTS.seed },
    timing,
    loop,
    metrics,
    loras,
    faults,
    generations,
    kvEvents,
    nextRequestId: 0,
  };

  const app = Fastify({ logger: false, forceCloseConnections: true, bodyLimit: BODY_LIMIT_BYTES });
  app.setErrorHandler(sendError);
  // FastAPI's answer for unknown routes, which is what a client probing vLLM gets.
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ detail: 'Not Found' }));
  registerRoutes(app, ctx);

  try {
    await app.listen({ host: opts.host ?? SIM_DEFAULTS.host, port: opts.port ?? SIM_DEFAULTS.port });
  } catch (err) {
    await kvEvents?.close();
    throw err;
  }
  const { address, port } = app.server.address() as AddressInfo;
  return {
    url: `http://${urlHost(address)}:${port}`,
    port,
    model: opts.model,
    kvCapacityTokens,
    kvEventsEndpoint: kvEvents?.endpoint,
    setFaults: (next) => faults.set(next),
    close: async () => {
      loop?.close();
      await app.close();
      await kvEvents?.close();
    },
  };
}

function registerRoutes(app: FastifyInstance, ctx: InferenceContext): void {
  const startedAt = Math.floor(Date.now() / 1000);
  app.post('/v1/chat/completions', (request, reply) => handleGeneration(ctx, 'chat', request, reply));
  app.post('/v1/completions', (request, reply) => handleGeneration(ctx, 'completion', request, reply));
  app.post('/v1/embeddings', (request, reply) => handleEmbeddings(ctx, request, reply));

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [
      modelCard(ctx.model, ctx.model, null, ctx.limits.maxModelLen, startedAt),
      ...ctx.loras.list().map((lora) => modelCard(lora.name, lora.path, ctx.model, null, startedAt)),
    ],
  }));

  app.get('/health', async (_request, reply) => reply.code(200).send());

  app.get('/metrics', async (_request, reply) => {
    const registry = ctx.metrics.registry;
    return reply.type(registry.contentType).send(await registry.metrics());
  });

  app.post('/v1/load_lora_adapter', async (request, reply) => {
    const body = parseBody(loadLoraSchema, request.body);
    if (!body.lora_name || !body.lora_path) {
      throw new SimError(400, "Both 'lora_name' and 'lora_path' must be provided.", { type: 'InvalidUserInput' });
    }
    await ctx.loras.load(body.lora_name, body.lora_path);
    return reply.type('text/plain; charset=utf-8').send(`Success: LoRA adapter '${body.lora_name}' added successfully.`);
  });

  app.post('/v1/unload_lora_adapter', async (request, reply) => {
    const body = parseBody(unloadLoraSchema, request.body);
    if (!body.lora_name) throw new SimError(400, "'lora_name' needs to be provided to unload a LoRA adapter.", { type: 'InvalidUserInput' });
    ctx.loras.unload(body.lora_name);
    return reply.type('text/plain; charset=utf-8').send(`Success: LoRA adapter '${body.lora_name}' removed successfully.`);
  });

  // vLLM's dev-mode endpoint. Where vLLM's reset fails because requests hold blocks, the sim answers 409 to say so.
  app.post('/reset_prefix_cache', async (_request, reply) => {
    const reset = ctx.loop === undefined ? ctx.timing.resetPrefixCache() : ctx.loop.resetPrefixCache();
    if (!reset) throw new SimError(409, 'Prefix cache not reset: the engine is running requests. Retry when it is idle.');
    if (ctx.loop === undefined) ctx.kvEvents?.publish(ctx.timing.takeCacheEvents());
    return reply.code(200).send();
  });

  app.get('/sim/faults', async () => ctx.faults.current);
  app.post('/sim/faults', async (request) => {
    ctx.faults.set((request.body ?? {}) as Partial<FaultSettings>);
    return ctx.faults.current;
  });
  app.delete('/sim/faults', async () => {
    ctx.faults.set({});
    return ctx.faults.current;
  });
}

// vLLM's ModelCard, including the legacy permission entry OpenAI clients once required.
function modelCard(id: string, root: string, parent: string | null, maxModelLen: number | null, created: number) {
  return {
    id,
    object: 'model',
    created,
    owned_by: 'vllm',
    root,
    parent,
    max_model_len: maxModelLen,
    permission: [
      {
        id: `modelperm-${id}`,
        object: 'model_permission',
        created,
        allow_create_engine: false,
        allow_sampling: true,
        allow_logprobs: true,
        allow_search_indices: false,
        allow_view: true,
        allow_fine_tuning: false,
        organization: '*',
        group: null,
        is_blocking: false,
      },
    ],
  };
}

// Errors go out as plain bodies: Fastify would serialise an Error in its own shape, not vLLM's.
function sendError(err: FastifyError, _request: FastifyRequest, reply: FastifyReply) {
  const error = toSimError(err);
  return reply.code(error.status).send(error.toJSON());
}

function toSimError(err: FastifyError): SimError {
  if (err instanceof SimError) return err;
  if (err instanceof ZodError) {
    const issue = err.issues[0]!;
    return new SimError(400, `Invalid value for '${issue.path.map(String).join('.')}': ${issue.message}`);
  }
  // Fastify's own rejections (malformed JSON, wrong content type, body too large) keep their status.
  const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
  return new SimError(status, status === 500 ? `Internal server error: ${err.message}` : err.message);
}

function definedTimingOverrides(opts: SimOptions): Partial<TimingParams> {
  const overrides: Partial<Record<keyof TimingParams, number>> = {};
  for (const key of ['prefillTokensPerSec', 'decodeBaseMs', 'decodeMsPer1kKvTokens', 'maxNumSeqs', 'maxNumBatchedTokens', 'blockSize'] as const) {
    const value = opts[key];
    if (value !== undefined) overrides[key] = value;
  }
  return overrides;
}

function requirePositive(name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`startSim: ${name} must be a positive number, got ${value}`);
}

function urlHost(address: string): string {
  if (address === '0.0.0.0' || address === '::') return '127.0.0.1';
  return address.includes(':') ? `[${address}]` : address;
}
