/**
 * The inference endpoints: /v1/chat/completions, /v1/completions and /v1/embeddings. Request-level faults (fail,
 * hang) apply here, before any byte is sent; per-token faults live in Generation.
 */

import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_EMBEDDING_DIMENSIONS, embed, embeddingsBody } from './embeddings.js';
import type { EngineLoop } from './engine-loop.js';
import { contextTooLong, modelNotFound, SimError } from './errors.js';
import type { FaultSettings, FaultState } from './faults.js';
import type { SimKvEvents } from './kv-events.js';
import { Generation } from './generation.js';
import { type GenerationLimits, planGeneration } from './generation-plan.js';
import type { LoraRegistry } from './lora-registry.js';
import type { SimMetrics } from './metrics.js';
import type { Endpoint } from './responses.js';
import { chatRequestSchema, completionRequestSchema, embeddingRequestSchema, messageText, parseBody, type PromptInput, singlePrompt } from './schemas.js';
import type { TimingModel } from './timing-model.js';
import { renderChatPrompt, renderCompletionPrompt } from '../kvcache/chat-template.js';
import { tokenize } from '../kvcache/tokenizers/approximate.js';

/** vLLM's default for /v1/completions (OpenAI's too); chat has none, the model decides. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export interface InferenceContext {
  /** The base model's served name. */
  readonly model: string;
  readonly limits: GenerationLimits;
  readonly timing: TimingModel;
  /** Undefined in zero-latency mode, where requests complete without the engine loop. */
  readonly loop: EngineLoop | undefined;
  readonly metrics: SimMetrics;
  readonly loras: LoraRegistry;
  readonly faults: FaultState;
  /** Generations the engine is working on, by engine request id. */
  readonly generations: Map<string, Generation>;
  /** Present when the engine publishes KV events. */
  readonly kvEvents: SimKvEvents | undefined;
  nextRequestId: number;
}

export async function handleGeneration(ctx: InferenceContext, endpoint: Endpoint, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  failIfFaulted(ctx.faults);
  let promptIds: number[];
  let maxTokens: number | undefined;
  let requested: { model?: string | null; stream?: boolean | null; stream_options?: { include_usage?: boolean | null } | null; seed?: number | null };
  if (endpoint === 'chat') {
    const body = parseBody(chatRequestSchema, request.body);
    promptIds = tokenize(renderChatPrompt(body.messages.map((m) => ({ role: m.role, content: messageText(m.content) }))));
    maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
    requested = body;
  } else {
    const body = parseBody(completionRequestSchema, request.body);
    promptIds = promptTokenIds(singlePrompt(body.prompt, 'prompt'));
    maxTokens = body.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS;
    requested = body;
  }
  const stream = requested.stream === true;
  if (requested.stream_options != null && !stream) {
    throw new SimError(400, 'Stream options can only be defined when `stream=True`.', { param: 'stream_options' });
  }
  const adapter = resolveAdapter(ctx, requested.model);
  const plan = planGeneration(promptIds, maxTokens, requested.seed ?? undefined, adapter, ctx.limits);
  const faults = ctx.faults.current;

  reply.hijack();
  const res = reply.raw;
  if (!(await waitOutHang(faults, res))) return;

  const engineId = String(ctx.nextRequestId++);
  const modelRequest = { id: engineId, promptTokens: plan.promptTokens, outputTokens: plan.output.ids.length, blockHashes: plan.blockHashes, adapter };
  ctx.kvEvents?.track(modelRequest, promptIds.concat(plan.output.ids));
  const setup = {
    res,
    endpoint,
    header: { id: responseId(endpoint === 'chat' ? 'chatcmpl' : 'cmpl', request), created: nowSeconds(), model: requested.model ?? ctx.model },
    plan,
    stream,
    includeUsage: stream && requested.stream_options?.include_usage === true,
    faults,
    metrics: ctx.metrics,
  };
  const loop = ctx.loop;
  if (loop === undefined) {
    const generation = new Generation({ ...setup, arrivalMs: 0, abortEngine: () => {} });
    const cachedTokens = ctx.timing.serveInstantly(modelRequest);
    ctx.kvEvents?.publish(ctx.timing.takeCacheEvents());
    generation.completeInstantly(cachedTokens);
    return;
  }
  const arrivalMs = loop.submit(modelRequest);
  const abortEngine = (): void => {
    ctx.generations.delete(engineId);
    loop.abort(engineId);
  };
  ctx.generations.set(engineId, new Generation({ ...setup, arrivalMs, abortEngine }));
}

export async function handleEmbeddings(ctx: InferenceContext, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  failIfFaulted(ctx.faults);
  const body = parseBody(embeddingRequestSchema, request.body);
  resolveAdapter(ctx, body.model);
  const inputs = embeddingInputs(body.input);
  const dimensions = body.dimensions ?? DEFAULT_EMBEDDING_DIMENSIONS;
  let promptTokens = 0;
  const vectors = inputs.map((input) => {
    const ids = promptTokenIds(input);
    if (ids.length > ctx.limits.maxModelLen) throw contextTooLong(ctx.limits.maxModelLen, ids.length);
    promptTokens += ids.length;
    return embed(ids, dimensions);
  });
  const payload = embeddingsBody({
    id: responseId('embd', request),
    created: nowSeconds(),
    model: body.model ?? ctx.model,
    vectors,
    promptTokens,
    format: body.encoding_format ?? 'float',
  });
  const faults = ctx.faults.current;
  reply.hijack();
  const res = reply.raw;
  if (!(await waitOutHang(faults, res))) return;
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

function failIfFaulted(faults: FaultState): void {
  const status = faults.takeFailure();
  if (status !== undefined) throw new SimError(status, `Simulated failure (fault injection): status ${status}`);
}

/** Applies the hang fault. False when the request must never be answered, or the client left meanwhile. */
async function waitOutHang(faults: Readonly<FaultSettings>, res: FastifyReply['raw']): Promise<boolean> {
  if (!faults.hangBeforeFirstByte) return true;
  // Hanging forever leaves the socket open until the client gives up or the sim closes (which destroys it).
  if (faults.hangMs === 0) return false;
  await sleep(faults.hangMs);
  return !res.destroyed;
}

/** The adapter a request's `model` names; undefined for the base model; vLLM's 404 for anything else. */
function resolveAdapter(ctx: InferenceContext, model: string | null | undefined): string | undefined {
  if (model == null || model === ctx.model) return undefined;
  if (ctx.loras.get(model) !== undefined) return model;
  throw modelNotFound(model);
}

// Text prompts get a BOS token, as vLLM tokenizes completion prompts with add_special_tokens; ids are taken as given.
function promptTokenIds(prompt: string | number[]): number[] {
  return typeof prompt === 'string' ? tokenize(renderCompletionPrompt(prompt)) : prompt;
}

function embeddingInputs(input: PromptInput): (string | number[])[] {
  if (typeof input === 'string') return [input];
  if (input.length === 0) throw new SimError(400, "'input' cannot be empty", { param: 'input' });
  if (typeof input[0] === 'number') return [input as number[]];
  return input as (string | number[])[];
}

// As vLLM: the client's X-Request-Id when given, else a random one.
function responseId(prefix: string, request: FastifyRequest): string {
  const given = request.headers['x-request-id'];
  return `${prefix}-${typeof given === 'string' && given !== '' ? given : randomUUID().replaceAll('-', '')}`;
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
