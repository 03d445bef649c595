import { context, propagation, SpanStatusCode } from '@opentelemetry/api';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import type { Config } from '../core/config.js';
import type { UsageRow } from '../core/db/control-plane-store.js';
import { ApiError } from '../core/errors.js';
import type { UsageSink } from '../core/usage/usage-sink.js';
import { admit, modelNotFound, type Admission, type AdmissionDeps } from './admission.js';
import type { AdapterRouter } from './adapters.js';
import type { CapacityGate } from './capacity.js';
import { QueueFullError, QueueTimeoutError, type FairQueue, type QueueTenant } from './fair-queue.js';
import type { EngineRegistry } from './engines/registry.js';
import type { PromptRequest } from '../kvcache/request-blocks.js';
import type { GatewayMetrics } from './metrics.js';
import type { PlacedRequest, Placement } from './placement/place.js';
import type { PrefixTracker } from './prefix.js';
import type { RequestFeatures } from './routing/types.js';
import type { SessionAffinity } from './sessions.js';
import { tracer } from './tracing.js';
import { StreamUsageTap, usageFromBody, type TokenUsage } from './usage-tap.js';

export type Endpoint = RequestFeatures['endpoint'];

export interface ProxyDeps {
  readonly config: Config;
  readonly registry: EngineRegistry;
  /** Routes over the registry and keeps the engines' counts, the index and calibration in step (placement/place.ts). */
  readonly placement: Placement;
  readonly metrics: GatewayMetrics;
  /** Model name -> compute pools it may run in, from the models section of the config. */
  readonly pools: ReadonlyMap<string, readonly string[]>;
  /** Absent when kvcache.enabled is false. */
  readonly prefix: PrefixTracker | undefined;
  readonly sessions: SessionAffinity;
  readonly admission: AdmissionDeps;
  /** Absent when queue.enabled is false. */
  readonly queue: FairQueue | undefined;
  readonly capacity: CapacityGate;
  /** Absent without a control-plane database. */
  readonly usage: UsageSink | undefined;
  /** LoRA adapters from the registry; absent without a control-plane database. */
  readonly adapters: AdapterRouter | undefined;
}

const upstreamPath: Record<Endpoint, string> = {
  chat: '/v1/chat/completions',
  completions: '/v1/completions',
  embeddings: '/v1/embeddings',
};

/** Why a request stopped early on our side; decides the status and whether a retry makes sense. */
type Cancel = 'client-closed' | 'first-token-timeout' | 'total-timeout';

/** An engine answer that is not worth retrying elsewhere is passed to the client as the engine gave it. */
interface UpstreamFailure {
  readonly reason: string;
  readonly status?: number;
  readonly body?: Buffer;
}

/** Bytes of an engine's error body kept to pass on once retries are exhausted. */
const maxErrorBody = 64 * 1024;

/**
 * One inference request from arrival to the last byte: route, send, retry on another engine while nothing has
 * reached the client, then relay the answer. Streams are relayed chunk by chunk with backpressure.
 */
export async function proxyInference(
  endpoint: Endpoint,
  request: FastifyRequest,
  reply: FastifyReply,
  deps: ProxyDeps,
): Promise<void> {
  const { config, registry, metrics } = deps;
  const body = request.body as InferenceBody;
  const model = body.model;
  const stream = endpoint !== 'embeddings' && body.stream === true;
  // The engine's usage event corrects the token reservation and the usage record; the client sees it only if asked.
  const clientWantsUsage = stream && body.stream_options?.include_usage === true;
  const raw = stream && !clientWantsUsage ? withIncludeUsage(request.rawBody, body) : (request.rawBody ?? Buffer.from(JSON.stringify(body)));
  const principal = request.principal!;
  const arrivedAt = performance.now();

  const abort = new AbortController();
  let cancel: Cancel | undefined;
  const stop = (why: Cancel) => {
    if (cancel !== undefined) return;
    cancel = why;
    abort.abort(new Error(why));
  };
  const onClientClose = () => {
    if (!reply.raw.writableFinished) stop('client-closed');
  };
  reply.raw.once('close', onClientClose);
  // One timer at a time: the first-token deadline, then (streams only) what is left of the total.
  const firstTokenFirst = config.timeouts.firstTokenMs < config.timeouts.totalMs;
  let deadline = setTimeout(stop, firstTokenFirst ? config.timeouts.firstTokenMs : config.timeouts.totalMs, firstTokenFirst ? 'first-token-timeout' : 'total-timeout');

  const span = tracer.startSpan('switchyard.request', {
    attributes: { 'switchyard.model': model, 'switchyard.endpoint': endpoint, 'switchyard.stream': stream },
  });
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: stream ? 'text/event-stream' : 'application/json',
    'x-request-id': String(request.id),
  };
  propagation.inject(context.active(), headers);
  reply.header('x-request-id', String(request.id));

  const tried = new Set<string>();
  let engineId = 'none';
  let lastFailure: UpstreamFailure | undefined;
  // The current attempt's placement: holds its engine's slot until it is abandoned or finished.
  let placed: PlacedRequest | undefined;
  // True from leaving the fair queue until an engine slot is taken: the gate counts the request meanwhile.
  let holdsGate = false;
  // The model the engines serve: the client's, or the base model of the adapter it names.
  let baseModel = model;
  const releaseGate = () => {
    if (!holdsGate) return;
    holdsGate = false;
    deps.capacity.release(baseModel);
  };
  const abandonAttempt = () => {
    if (placed === undefined) return;
    placed.abandon();
    placed = undefined;
    deps.queue?.pump();
  };
  let status = 0;
  let admission: Admission | undefined;
  let usage: TokenUsage | undefined;
  let firstByteAt: number | undefined;
  // Set once an engine may have done work: without usage from it, the reservation stands as charged.
  let engineWorked = false;
  const tenant: QueueTenant = { key: principal.tenant?.id ?? `principal:${principal.id}`, weight: principal.tenant?.weight ?? 1, priority: principal.tenant?.priority ?? 0 };

  const finish = (outcome: string) => {
    clearTimeout(deadline);
    reply.raw.off('close', onClientClose);
    releaseGate();
    const now = performance.now();
    if (placed !== undefined && firstByteAt !== undefined) {
      placed.finish({ atMs: now, completionTokens: usage?.completionTokens, cachedTokens: usage?.cachedTokens, streamed: stream });
      placed = undefined;
      deps.queue?.pump();
    }
    abandonAttempt();
    // The model name is the client's: label with it only when an engine serves it, so that requests for made-up
    // models cannot create series without bound.
    const modelLabel = engineId !== 'none' || servesModel(registry, model) ? model : unknownModel;
    metrics.requests.inc({ model: modelLabel, engine: engineId, status: outcome });
    metrics.duration.observe({ model: modelLabel }, (now - arrivedAt) / 1000);
    span.setAttributes({ 'switchyard.engine': engineId, 'switchyard.retries': Math.max(0, tried.size - 1), 'switchyard.outcome': outcome });
    if (status >= 500 || outcome === 'stream_error') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
    span.end();
    settle(admission, usage, engineWorked, tenant, deps, request);
    recordUsage(request, deps, {
      tenantId: principal.tenant?.id ?? null,
      keyId: principal.keyId ?? null,
      model: baseModel,
      adapter: baseModel === model ? null : model,
      engine: engineId === 'none' ? null : engineId,
      promptTokens: usage?.promptTokens ?? 0,
      cachedTokens: usage?.cachedTokens ?? 0,
      completionTokens: usage?.completionTokens ?? 0,
      status: outcome === 'stream_error' ? 502 : outcome === 'client_closed' ? 499 : status,
      ttftMs: firstByteAt === undefined ? null : firstByteAt - arrivedAt,
      latencyMs: now - arrivedAt,
    });
  };

  try {
    // A registered adapter runs on its base model's engines: grants, quotas, saturation and routing go by the base.
    const adapter = deps.adapters === undefined || servesModel(registry, model) ? undefined : await deps.adapters.resolve(model, principal);
    baseModel = adapter?.baseModel ?? model;
    admission = await admit(principal, baseModel, body, raw.length, endpoint !== 'embeddings', reply, deps.admission);
    const residentOn = adapter === undefined ? undefined : await deps.adapters!.residentOn(adapter, arrivedAt + config.timeouts.firstTokenMs, abort.signal);
    if (deps.queue !== undefined) {
      await waitForCapacity(deps, tenant, baseModel, admission.promptEstimate, arrivedAt, abort.signal);
      holdsGate = true;
    }
    // The prefix is hashed under the client's model name, so each adapter has prefixes of its own.
    const prompt = deps.prefix === undefined || endpoint === 'embeddings' ? undefined : await deps.prefix.lookup(body as unknown as PromptRequest, model, adapter?.name);
    const sessionKey = deps.sessions.keyOf(request.headers, body);
    const who = { tenant: tenant.key, model };
    const features: RequestFeatures = {
      model: baseModel,
      adapter: adapter === undefined ? undefined : { name: adapter.name, residentOn: residentOn! },
      endpoint,
      pools: deps.pools.get(baseModel),
      exclude: tried,
      prefix: prompt === undefined ? undefined : { totalBlocks: prompt.hashes.length, matches: prompt.matches },
      promptTokens: prompt?.promptTokens ?? admission.promptEstimate,
      outputTokens: deps.placement.expectedOutput(who, maxTokensOf(body)),
      sessionEngine: deps.sessions.engineOf(sessionKey),
    };
    for (let attempt = 1; ; attempt++) {
      // Cancelled while waiting or while the prefix was looked up: nothing to send, nor to record in the index.
      if (cancel !== undefined) throw cancelled(cancel, config);
      placed = deps.placement.place(features, prompt, who, performance.now());
      if (placed === undefined) throw noEngineLeft(baseModel, tried.size, lastFailure, deps);
      const { decision, matchedBlocks: matched, totalBlocks: blocks } = placed;
      engineId = placed.engineId;
      tried.add(engineId);
      releaseGate();
      metrics.decisions.inc({ policy: decision.policy, engine: engineId, reason: decision.reason ?? 'none' });
      span.setAttributes({ 'switchyard.policy': decision.policy, 'switchyard.candidates': decision.candidates, 'switchyard.reason': decision.reason ?? 'none', 'switchyard.predicted_ttft_ms': placed.predictedTtftMs });
      reply.header('x-switchyard-route', `${decision.reason ?? 'none'}; predicted-ttft-ms=${Math.round(placed.predictedTtftMs)}`);
      if (prompt !== undefined) {
        reply.header('x-switchyard-prefix-blocks', `${matched}/${blocks}`);
        span.setAttributes({ 'switchyard.prefix_matched_blocks': matched, 'switchyard.prefix_blocks': blocks });
      }

      const outcome = await attemptOnce(registry.client(engineId).pool, upstreamPath[endpoint], headers, raw, stream, abort.signal, config);
      if (outcome.kind === 'ok') {
        engineWorked = true;
        firstByteAt = performance.now();
        placed.firstToken(firstByteAt);
        registry.reportSuccess(engineId);
        deps.sessions.served(sessionKey, engineId);
        if (prompt !== undefined) {
          metrics.prefixBlocks.inc({ model, kind: 'prompt' }, blocks);
          metrics.prefixBlocks.inc({ model, kind: 'matched' }, matched);
        }
        metrics.ttft.observe({ model }, (firstByteAt - arrivedAt) / 1000);
        status = outcome.response.statusCode;
        reply.code(status).header('x-switchyard-pod', engineId);
        const contentType = outcome.response.headers['content-type'];
        if (typeof contentType === 'string') reply.header('content-type', contentType);
        if (!stream) {
          usage = usageFromBody(outcome.first);
          finish(String(status));
          return reply.send(outcome.first);
        }
        if (firstTokenFirst) {
          clearTimeout(deadline);
          deadline = setTimeout(stop, config.timeouts.totalMs - (performance.now() - arrivedAt), 'total-timeout');
        }
        reply.header('cache-control', 'no-cache');
        const tap = new StreamUsageTap(!clientWantsUsage);
        return relay(reply, outcome, tap, {
          engineId,
          cancelReason: () => cancel,
          finish: (outcome) => {
            usage = tap.usage;
            finish(outcome);
            request.log.info({ res: { statusCode: status }, responseTime: performance.now() - arrivedAt, outcome }, 'request completed');
          },
          reportFailure: () => registry.reportFailure(engineId),
        });
      }

      abandonAttempt();
      if (cancel !== undefined) throw cancelled(cancel, config);
      // The adapter left that engine since the residency map was read (vLLM answers 404): another holder may serve.
      if (outcome.kind === 'final' && adapter !== undefined && outcome.failure.status === 404) {
        lastFailure = { ...outcome.failure, reason: 'adapter_not_resident' };
        if (attempt >= config.retry.maxAttempts) throw upstreamGaveUp(lastFailure, attempt);
        metrics.retries.inc({ model, reason: lastFailure.reason });
        continue;
      }
      if (outcome.kind === 'final') {
        // A 4xx from the engine is the client's problem; another engine would answer the same.
        status = outcome.failure.status ?? 502;
        reply.header('x-switchyard-pod', engineId);
        finish(String(status));
        return sendUpstreamError(reply, outcome.failure);
      }
      if (outcome.countsAgainstEngine) registry.reportFailure(engineId);
      lastFailure = outcome.failure;
      if (attempt >= config.retry.maxAttempts) throw upstreamGaveUp(lastFailure, attempt);
      metrics.retries.inc({ model, reason: outcome.failure.reason });
      span.addEvent('retry', { 'switchyard.engine': engineId, 'switchyard.reason': outcome.failure.reason });
      request.log.warn({ engine: engineId, reason: outcome.failure.reason, attempt }, 'engine failed before the first byte; retrying elsewhere');
    }
  } catch (err) {
    const apiError = err instanceof ApiError ? err : cancel !== undefined ? cancelled(cancel, config) : undefined;
    if (apiError === undefined) {
      status = 500;
      finish('500');
      throw err;
    }
    status = apiError.status;
    finish(cancel === 'client-closed' ? 'client_closed' : String(apiError.status));
    if (engineId !== 'none') reply.header('x-switchyard-pod', engineId);
    throw apiError;
  }
}

interface InferenceBody {
  model: string;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  user?: unknown;
  max_tokens?: unknown;
  max_completion_tokens?: unknown;
  n?: unknown;
}

/** The completion tokens the client allows, when it says. */
function maxTokensOf(body: InferenceBody): number | undefined {
  const max = body.max_completion_tokens ?? body.max_tokens;
  return typeof max === 'number' && max >= 1 ? max : undefined;
}

/** The body with stream_options.include_usage on: spliced into the client's bytes when it sent no stream_options. */
function withIncludeUsage(rawBody: Buffer | null, body: InferenceBody): Buffer {
  if (rawBody !== null && body.stream_options === undefined) {
    const open = rawBody.indexOf(0x7b);
    if (open >= 0) return Buffer.concat([rawBody.subarray(0, open + 1), includeUsageField, rawBody.subarray(open + 1)]);
  }
  return Buffer.from(JSON.stringify({ ...body, stream_options: { ...(body.stream_options ?? {}), include_usage: true } }));
}

const includeUsageField = Buffer.from('"stream_options":{"include_usage":true},');

/**
 * Holds the request in the fair queue while every engine that could serve it is saturated. New arrivals queue
 * behind waiting ones even when an engine has room, or they would overtake them and fairness would mean nothing.
 */
async function waitForCapacity(
  deps: ProxyDeps,
  tenant: QueueTenant,
  model: string,
  promptEstimate: number,
  arrivedAt: number,
  signal: AbortSignal,
): Promise<void> {
  const queue = deps.queue!;
  const canRun = () => deps.capacity.tryTake(model);
  const wait = Math.min(deps.config.queue.maxWaitMs, deps.config.timeouts.firstTokenMs);
  try {
    await queue.enqueue(tenant, promptEstimate, arrivedAt + wait, canRun, signal);
  } catch (err) {
    if (err instanceof QueueFullError) {
      deps.metrics.queueRejected.inc({ reason: 'full' });
      throw new ApiError(429, `too many requests are waiting for an engine (${deps.config.queue.maxQueued}); retry shortly`, { code: 'queue_full', headers: { 'retry-after': '1' } });
    }
    if (err instanceof QueueTimeoutError) {
      deps.metrics.queueRejected.inc({ reason: 'timeout' });
      throw new ApiError(429, `every engine serving \`${model}\` stayed saturated for ${wait} ms, the request's time-to-first-token budget`, { code: 'queue_timeout', headers: { 'retry-after': '1' } });
    }
    throw err;
  }
}

/** Corrects the token reservation and the fairness counter with what the request really used. */
function settle(admission: Admission | undefined, usage: TokenUsage | undefined, engineWorked: boolean, tenant: QueueTenant, deps: ProxyDeps, request: FastifyRequest): void {
  if (admission === undefined) return;
  const used = usage !== undefined ? usage.promptTokens + usage.completionTokens : engineWorked ? undefined : 0;
  if (usage !== undefined) deps.queue?.charge(tenant, usage.promptTokens - admission.promptEstimate, usage.completionTokens);
  if (admission.reservation === undefined || used === undefined) return;
  deps.admission.limiter?.settle(admission.reservation, used).catch((err: unknown) => request.log.warn({ err }, 'could not correct the token reservation'));
}

const maxModelLength = 256;

/** One usage event per finished request; the id is ours even when the client chose the request id, so it is unique. */
export function recordUsage(request: FastifyRequest, deps: Pick<ProxyDeps, 'usage' | 'metrics'>, row: Omit<UsageRow, 'requestId'>): void {
  if (deps.usage === undefined || request.usageRecorded) return;
  request.usageRecorded = true;
  const requestId = request.id === request.headers['x-request-id'] ? `${request.id}.${randomUUID()}` : String(request.id);
  deps.usage.record({ ...row, requestId, model: row.model.length > maxModelLength ? row.model.slice(0, maxModelLength) : row.model, at: new Date() });
  deps.metrics.usageRecorded.inc();
}

type Attempt =
  | { kind: 'ok'; response: Dispatcher.ResponseData; first: Buffer }
  | { kind: 'retry'; failure: UpstreamFailure; countsAgainstEngine: boolean }
  | { kind: 'final'; failure: UpstreamFailure };

/**
 * Sends the request to one engine and waits for the first byte of a successful answer (the whole answer when
 * not streaming), since until then a failure is invisible to the client and can be retried.
 */
async function attemptOnce(
  pool: Dispatcher,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  stream: boolean,
  signal: AbortSignal,
  config: Config,
): Promise<Attempt> {
  let response: Dispatcher.ResponseData;
  try {
    response = await pool.request({
      method: 'POST',
      path,
      headers,
      body,
      signal,
      // The first-token deadline covers header wait; idle time between chunks is bounded per read.
      headersTimeout: 0,
      bodyTimeout: config.timeouts.idleMs,
    });
  } catch (err) {
    return { kind: 'retry', failure: { reason: errorReason(err) }, countsAgainstEngine: true };
  }
  const code = response.statusCode;
  if (code >= 400) {
    const errorBody = await readCapped(response.body, maxErrorBody).catch(() => undefined);
    const failure: UpstreamFailure = { reason: `status_${code}`, status: code, body: errorBody };
    if (code >= 500 || code === 429) return { kind: 'retry', failure, countsAgainstEngine: code >= 500 };
    return { kind: 'final', failure };
  }
  try {
    if (!stream) return { kind: 'ok', response, first: Buffer.from(await response.body.arrayBuffer()) };
    const first = await firstChunk(response.body);
    if (first === undefined) return { kind: 'retry', failure: { reason: 'empty_stream' }, countsAgainstEngine: true };
    return { kind: 'ok', response, first };
  } catch (err) {
    response.body.destroy();
    return { kind: 'retry', failure: { reason: errorReason(err) }, countsAgainstEngine: true };
  }
}

/**
 * Resolves with the body's first chunk (the body left paused), or undefined when it ends empty. The body may
 * end or fail before the relay attaches its listeners; relay() reads that from readableEnded / errored, and the
 * permanent no-op listener keeps such an early error from being thrown as unhandled.
 */
function firstChunk(body: Readable): Promise<Buffer | undefined> {
  body.on('error', ignore);
  return new Promise((resolve, reject) => {
    const settle = (fn: () => void) => {
      body.off('data', onData).off('end', onEnd).off('error', onError);
      fn();
    };
    const onData = (chunk: Buffer) => {
      body.pause();
      settle(() => resolve(chunk));
    };
    const onEnd = () => settle(() => resolve(undefined));
    const onError = (err: Error) => settle(() => reject(err));
    body.on('data', onData).on('end', onEnd).on('error', onError);
  });
}

interface RelayHooks {
  readonly engineId: string;
  readonly cancelReason: () => Cancel | undefined;
  readonly finish: (outcome: string) => void;
  readonly reportFailure: () => void;
}

/**
 * Relays a stream after its first chunk, straight onto the socket with backpressure: no async iterator or
 * intermediate stream per chunk, which is most of a proxy's CPU on SSE. A failure from here on cannot be
 * retried: the client gets an OpenAI-style error event and the stream ends without `[DONE]`.
 */
function relay(reply: FastifyReply, attempt: Extract<Attempt, { kind: 'ok' }>, tap: StreamUsageTap, hooks: RelayHooks): void {
  const body = attempt.response.body;
  const status = attempt.response.statusCode;
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, reply.getHeaders() as Record<string, string>);
  const first = tap.push(attempt.first);
  if (first.length > 0) res.write(first);
  const onDrain = () => body.resume();
  const onEnd = () => {
    res.off('drain', onDrain);
    res.end(tap.flush());
    hooks.finish(String(status));
  };
  const onError = (err: Error) => {
    res.off('drain', onDrain);
    const why = hooks.cancelReason();
    if (why === 'client-closed') {
      res.destroy();
      hooks.finish('client_closed');
      return;
    }
    const reason = errorReason(err);
    if (why === undefined && reason !== 'idle_timeout') hooks.reportFailure();
    const message =
      why === 'total-timeout'
        ? 'the request exceeded the total timeout'
        : reason === 'idle_timeout'
          ? 'the engine sent nothing within the idle timeout'
          : `engine ${hooks.engineId} failed in the middle of the stream`;
    res.end(sseError(message, why === 'total-timeout' || reason === 'idle_timeout' ? 'timeout' : 'upstream_error'));
    hooks.finish('stream_error');
  };
  // The whole answer may have arrived with the first chunk (short answers), or the engine failed right after it.
  if (body.errored !== null) return onError(body.errored);
  if (body.readableEnded) return onEnd();
  res.on('drain', onDrain);
  body.on('data', (chunk: Buffer) => {
    const out = tap.push(chunk);
    if (out.length > 0 && !res.write(out)) body.pause();
  });
  body.once('end', onEnd);
  body.once('error', onError);
  body.resume();
}

function ignore(): void {}

function sseError(message: string, code: string): Buffer {
  const body = new ApiError(502, message, { type: 'server_error', code }).toJSON();
  return Buffer.from(`data: ${JSON.stringify(body)}\n\n`);
}

function errorReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'connect_error';
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'connection_closed';
    case 'UND_ERR_BODY_TIMEOUT':
      return 'idle_timeout';
    case 'UND_ERR_ABORTED':
    case 'ABORT_ERR':
      return 'aborted';
    default:
      return typeof code === 'string' ? code.toLowerCase() : 'upstream_error';
  }
}

async function readCapped(body: Dispatcher.ResponseData['body'], cap: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (size < cap) chunks.push(chunk.subarray(0, cap - size));
    size += chunk.length;
  }
  return Buffer.concat(chunks);
}

function cancelled(why: Cancel, config: Config): ApiError {
  if (why === 'client-closed') return new ApiError(499, 'the client closed the connection', { code: 'client_closed' });
  const ms = why === 'first-token-timeout' ? config.timeouts.firstTokenMs : config.timeouts.totalMs;
  const what = why === 'first-token-timeout' ? 'time to first token' : 'total time';
  return new ApiError(504, `no answer from an engine within the ${what} limit (${ms} ms)`, { type: 'timeout_error', code: 'timeout' });
}

const unknownModel = '(unknown)';

function servesModel(registry: EngineRegistry, model: string): boolean {
  return registry.snapshot().some((e) => e.spec.models.includes(model));
}

function noEngineLeft(model: string, tried: number, last: UpstreamFailure | undefined, deps: ProxyDeps): ApiError {
  if (tried > 0) return upstreamGaveUp(last, tried);
  if (!servesModel(deps.registry, model)) {
    return modelNotFound(model);
  }
  return new ApiError(503, `no healthy engine is serving model \`${model}\` right now`, { type: 'server_error', code: 'no_healthy_engine' });
}

function upstreamGaveUp(last: UpstreamFailure | undefined, attempts: number): ApiError {
  const why = last?.reason ?? 'unknown';
  if (last?.status === 429) {
    return new ApiError(429, `every engine tried is overloaded (${attempts} attempts)`, { type: 'rate_limit_exceeded', code: 'engine_overloaded' });
  }
  return new ApiError(502, `the engines failed before answering (${attempts} attempts, last: ${why})`, { type: 'server_error', code: 'upstream_error' });
}

/** Passes an engine's own error on, in OpenAI's shape even if the engine used another. */
function sendUpstreamError(reply: FastifyReply, failure: UpstreamFailure): FastifyReply {
  const status = failure.status ?? 502;
  const text = failure.body?.toString('utf8') ?? '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const inner = (parsed as { error?: unknown } | undefined)?.error;
  if (typeof inner === 'object' && inner !== null && typeof (inner as { message?: unknown }).message === 'string') {
    return reply.code(status).type('application/json').send(text);
  }
  const message = typeof (parsed as { message?: unknown } | undefined)?.message === 'string' ? (parsed as { message: string }).message : text.slice(0, 1000) || `engine answered ${status}`;
  return reply.code(status).send(new ApiError(status, message).toJSON());
}
