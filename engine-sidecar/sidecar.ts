/**
 * The engine sidecar: runs next to one engine (vLLM, SGLang, llama.cpp, or the simulator) and
 *
 * - supervises it (supervisor.ts): start, health checks, restarts with backoff;
 * - serves its metrics under one set of names (metrics.ts) at GET /metrics, the engine's own text appended;
 * - translates the adapter API (adapter-api.ts) to the engine's;
 * - relays its KV events (kv-relay.ts) when given the engine's endpoint;
 * - registers it in the Redis engine registry (registration.ts) once it is healthy and its models are known;
 * - drains on drain(): refuse adapter operations, deregister, wait until the engine has nothing running or
 *   waiting (its /metrics, two reads in a row) or the grace period ends, stop the engine, close.
 *
 * It does not proxy inference: routers talk to the engine's port directly. Without a command it attaches to an
 * engine run by something else (its own container): health, metrics, adapters, relay, registration and the
 * drain's wait as above, but it starts, restarts and stops nothing.
 *
 * HTTP:
 *   GET /healthz          200 while the sidecar runs (503 once the supervisor gave up)
 *   GET /readyz           200 when the engine is healthy and the sidecar is not draining, else 503
 *   GET /sidecar/status   state, engine pid, restarts, last exit, registration, relay counters
 *   GET /metrics          switchyard_engine_* then the engine's text
 *   adapter API           see adapter-api.ts
 */

import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { StdioOptions } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { EngineAdapters } from '../adapters-controller/engine-adapters.js';
import type { EngineLoad } from '../core/engine.js';
import { ApiError } from '../core/errors.js';
import { DEFAULT_REGISTRY_PREFIX } from '../core/discovery/engine-record.js';
import { parseEngineLoad } from '../router/engines/engine-metrics.js';
import { adapterRoutes } from './adapter-api.js';
import { apiKindOf, type SidecarEngineKind } from './engine-kind.js';
import { type KvRelay, startKvRelay } from './kv-relay.js';
import { formatSidecarMetrics, normaliseEngineMetrics, type NormalisedEngineMetrics } from './metrics.js';
import { type Registration, REGISTRATION_DEFAULTS, startRegistration } from './registration.js';
import { EngineSupervisor, type SupervisorOptions, type SupervisorStatus } from './supervisor.js';

export interface SidecarOptions {
  readonly engine: SidecarEngineKind;
  /** The engine's HTTP port. */
  readonly enginePort: number;
  /** Where the sidecar reaches the engine; default 127.0.0.1. */
  readonly engineHost?: string;
  /** The engine command and its arguments; none attaches to an engine run by something else (see supervisor.ts). */
  readonly command?: string | undefined;
  readonly args?: readonly string[];
  readonly engineEnv?: NodeJS.ProcessEnv;
  /** Default 'inherit'. */
  readonly engineStdio?: StdioOptions;
  /** Sidecar HTTP address; default 0.0.0.0. */
  readonly host?: string;
  /** Sidecar HTTP port; default 8090, 0 for any free one. */
  readonly port?: number;
  /** Registry id; default `<hostname>-<enginePort>`. */
  readonly id?: string;
  /** The host routers reach this pod at (record URL, sidecar URL, relay endpoint); default env POD_IP, else the hostname. */
  readonly advertiseHost?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly kvCapacityTokens?: number;
  /** Register in Redis; needs redisUrl. */
  readonly register?: boolean;
  readonly redisUrl?: string;
  /** Default DEFAULT_REGISTRY_PREFIX. */
  readonly registryPrefix?: string;
  /** Default 10 000; heartbeat every third of it. */
  readonly ttlMs?: number;
  /** The engine's KV events PUB endpoint: relay them. */
  readonly kvEvents?: string;
  /** Where the relay binds; default tcp://0.0.0.0:5558. */
  readonly kvEventsPublish?: string;
  /** How long a drain waits for the engine's requests; default 30 000. */
  readonly drainTimeoutMs?: number;
  /** Default 250. */
  readonly drainPollMs?: number;
  /** Supervisor tunables (health interval, backoff, restarts, stop timeout...). */
  readonly supervisor?: Partial<Omit<SupervisorOptions, 'command' | 'args' | 'env' | 'stdio' | 'healthUrl' | 'log' | 'onHealthy' | 'onExit' | 'onFailed'>>;
  /** One line per event. Default: stderr, prefixed "switchyard sidecar: ". */
  readonly log?: (line: string) => void;
}

export const SIDECAR_DEFAULTS = {
  engineHost: '127.0.0.1',
  host: '0.0.0.0',
  port: 8090,
  kvEventsPublish: 'tcp://0.0.0.0:5558',
  drainTimeoutMs: 30_000,
  drainPollMs: 250,
  metricsTimeoutMs: 2_000,
} as const;

export type SidecarState = 'running' | 'draining' | 'stopped' | 'failed';

export interface SidecarStatus {
  readonly id: string;
  readonly kind: SidecarEngineKind;
  readonly state: SidecarState;
  readonly engineUrl: string;
  readonly engine: SupervisorStatus;
  readonly models: readonly string[];
  readonly registered: boolean;
  readonly kvEvents: { readonly endpoint: string; readonly forwarded: number; readonly dropped: number; readonly clears: number } | undefined;
}

export interface DrainResult {
  /** The engine reported nothing running or waiting before the grace period ended (or it was not running). */
  readonly idle: boolean;
  readonly waitedMs: number;
}

export interface RunningSidecar {
  /** http://HOST:PORT of the sidecar's API, as bound (127.0.0.1 when bound to all addresses). */
  readonly url: string;
  readonly port: number;
  readonly id: string;
  /** The engine as the sidecar reaches it, e.g. http://127.0.0.1:8000 */
  readonly engineUrl: string;
  /** The relay's endpoint as advertised, when relaying. */
  readonly kvEventsEndpoint: string | undefined;
  readonly supervisor: EngineSupervisor;
  status(): SidecarStatus;
  /** Drains and stops (see the module comment); idempotent. Resolves when everything is closed. */
  drain(): Promise<DrainResult>;
  /** Resolves with the exit code the process should end with: 0 after a drain, 1 when the supervisor gave up. */
  readonly done: Promise<number>;
}

export async function startSidecar(opts: SidecarOptions): Promise<RunningSidecar> {
  const log = opts.log ?? ((line: string) => console.error(`switchyard sidecar: ${line}`));
  const kind = opts.engine;
  const apiKind = apiKindOf(kind);
  if (!(Number.isInteger(opts.enginePort) && opts.enginePort > 0 && opts.enginePort < 65536)) throw new RangeError(`startSidecar: enginePort must be a port, got ${opts.enginePort}`);
  if (opts.register === true && (opts.redisUrl === undefined || opts.redisUrl === '')) throw new RangeError('startSidecar: register needs a Redis URL');
  const engineHost = opts.engineHost ?? SIDECAR_DEFAULTS.engineHost;
  const engineUrl = `http://${urlHost(engineHost)}:${opts.enginePort}`;
  const advertiseHost = opts.advertiseHost ?? (process.env.POD_IP || hostname());
  const id = opts.id ?? `${hostname()}-${opts.enginePort}`;
  const drainTimeoutMs = opts.drainTimeoutMs ?? SIDECAR_DEFAULTS.drainTimeoutMs;
  const drainPollMs = opts.drainPollMs ?? SIDECAR_DEFAULTS.drainPollMs;

  let state: SidecarState = 'running';
  let models: string[] = [];
  const adapters = new EngineAdapters();
  let relay: KvRelay | undefined;
  let redis: Redis | undefined;
  let registration: Registration | undefined;
  let app: FastifyInstance | undefined;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));

  const closeAll = async (): Promise<void> => {
    await Promise.allSettled([relay?.close(), app?.close(), adapters.close()]);
    redis?.disconnect();
  };

  try {
    if (opts.kvEvents !== undefined) {
      relay = await startKvRelay({ upstream: opts.kvEvents, publish: opts.kvEventsPublish ?? SIDECAR_DEFAULTS.kvEventsPublish, onError: (err) => log(`kv events: ${err.message}`) });
    }
    app = Fastify({ logger: false, forceCloseConnections: true });
  } catch (err) {
    await closeAll();
    throw err;
  }
  const kvEventsEndpoint = relay === undefined ? undefined : advertiseEndpoint(relay.endpoint, advertiseHost);

  const fetchModels = async (): Promise<void> => {
    try {
      const res = await request(`${engineUrl}/v1/models`, { signal: AbortSignal.timeout(SIDECAR_DEFAULTS.metricsTimeoutMs) });
      const body = (await res.body.json()) as { data?: unknown };
      if (res.statusCode !== 200 || !Array.isArray(body.data)) throw new Error(`GET /v1/models answered ${res.statusCode}`);
      const base = body.data
        .filter((m): m is { id: string; parent?: unknown } => typeof m === 'object' && m !== null && typeof (m as { id?: unknown }).id === 'string')
        .filter((m) => m.parent === undefined || m.parent === null || m.parent === '')
        .map((m) => m.id);
      if (base.length > 0) models = base;
    } catch (err) {
      log(`could not read the engine's models: ${(err as Error).message}`);
    }
  };

  const supervisor = new EngineSupervisor({
    ...opts.supervisor,
    command: opts.command,
    args: opts.args,
    env: opts.engineEnv,
    stdio: opts.engineStdio,
    healthUrl: `${engineUrl}/health`,
    log,
    onHealthy: () => {
      void fetchModels().then(() => registration?.heartbeat());
    },
    onExit: () => relay?.engineRestarted(),
    onFailed: () => void fail(),
  });

  /** The engine's /metrics text (undefined when not read); unreachable when nothing answers on its port. */
  const readEngineText = async (): Promise<{ text: string | undefined; unreachable: boolean }> => {
    try {
      const res = await request(`${engineUrl}/metrics`, { signal: AbortSignal.timeout(SIDECAR_DEFAULTS.metricsTimeoutMs) });
      const text = await res.body.text();
      return { text: res.statusCode === 200 ? text : undefined, unreachable: false };
    } catch (err) {
      return { text: undefined, unreachable: (err as { code?: string }).code === 'ECONNREFUSED' };
    }
  };

  /** The engine's load; 'unreachable' when nothing answers on its port (it serves nothing), undefined when unreadable. */
  const readLoad = async (): Promise<EngineLoad | 'unreachable' | undefined> => {
    const { text, unreachable } = await readEngineText();
    if (unreachable) return 'unreachable';
    if (text === undefined) return undefined;
    try {
      return parseEngineLoad(apiKind, text, Date.now());
    } catch {
      return undefined;
    }
  };

  const status = (): SidecarStatus => ({
    id,
    kind,
    state,
    engineUrl,
    engine: supervisor.status(),
    models,
    registered: registration?.registered ?? false,
    kvEvents: relay === undefined ? undefined : { endpoint: kvEventsEndpoint!, ...relay.stats },
  });

  app.setErrorHandler((error: FastifyError | ApiError, req, reply) => {
    let apiError: ApiError;
    if (error instanceof ApiError) apiError = error;
    else if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) apiError = new ApiError(error.statusCode, error.message, { code: 'invalid_request' });
    else apiError = new ApiError(500, 'internal error');
    if (apiError.status >= 500 && apiError.status !== 503) log(`${req.method} ${req.url}: ${error.message}`);
    void reply.code(apiError.status).send(apiError.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(new ApiError(404, `no route for ${req.method} ${req.url.split('?')[0]}`, { code: 'unknown_url' }).toJSON());
  });
  app.get('/healthz', async (_req, reply) => reply.code(state === 'failed' ? 503 : 200).send({ status: state === 'failed' ? 'engine failed' : 'ok', state }));
  app.get('/readyz', async (_req, reply) => {
    const ready = state === 'running' && supervisor.state === 'healthy';
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', state, engine: supervisor.state });
  });
  app.get('/sidecar/status', async () => status());
  app.get('/metrics', async (_req, reply) => {
    const { text } = await readEngineText();
    let normalised: NormalisedEngineMetrics | undefined;
    if (text !== undefined) {
      try {
        normalised = normaliseEngineMetrics(apiKind, text);
      } catch (err) {
        log(`could not read the engine's metrics: ${(err as Error).message}`);
      }
    }
    const own = formatSidecarMetrics({ engine: normalised, restarts: supervisor.status().restarts });
    const engineText = text === undefined || text === '' ? '' : text.endsWith('\n') ? text : `${text}\n`;
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(own + engineText);
  });
  adapterRoutes(app, {
    adapters,
    engine: () => ({ id, url: engineUrl, kind: apiKind, models }),
    draining: () => state !== 'running',
  });

  let port: number;
  let url: string;
  try {
    await app.listen({ host: opts.host ?? SIDECAR_DEFAULTS.host, port: opts.port ?? SIDECAR_DEFAULTS.port });
    const address = app.server.address() as AddressInfo;
    port = address.port;
    url = `http://${urlHost(address.address === '0.0.0.0' || address.address === '::' ? '127.0.0.1' : address.address)}:${port}`;
  } catch (err) {
    await closeAll();
    throw err;
  }
  const sidecarUrl = `http://${urlHost(advertiseHost)}:${port}`;

  if (opts.register === true) {
    redis = new Redis(opts.redisUrl!, { maxRetriesPerRequest: 1, commandTimeout: 2_000, connectTimeout: 2_000 });
    redis.on('error', () => {
      // Failed heartbeats are reported by the registration; ioredis reconnects by itself.
    });
    registration = startRegistration({
      redis,
      prefix: opts.registryPrefix ?? DEFAULT_REGISTRY_PREFIX,
      ttlMs: opts.ttlMs ?? REGISTRATION_DEFAULTS.ttlMs,
      onError: (err) => log(`registry: ${err.message}`),
      onRegistered: (record) => log(`registered engine "${record.id}" at ${record.url} (models ${record.models.join(', ')})`),
      record: () => {
        if (models.length === 0) {
          // The read after the engine turned healthy failed: try again, for the next heartbeat.
          if (supervisor.state === 'healthy') void fetchModels();
          return undefined;
        }
        return {
          id,
          url: `http://${urlHost(advertiseHost)}:${opts.enginePort}`,
          kind: apiKind,
          models,
          labels: { ...opts.labels },
          kvCapacityTokens: opts.kvCapacityTokens,
          kvEventsEndpoint,
          sidecarUrl,
        };
      },
    });
  }

  supervisor.start();

  let draining: Promise<DrainResult> | undefined;

  const waitIdle = async (): Promise<DrainResult> => {
    const started = Date.now();
    const deadline = started + drainTimeoutMs;
    let zeros = 0;
    let unreadable = false;
    while (Date.now() < deadline) {
      if (!supervisor.running) return { idle: true, waitedMs: Date.now() - started };
      const load = await readLoad();
      if (load === 'unreachable') return { idle: true, waitedMs: Date.now() - started };
      if (load === undefined) {
        if (!unreadable) log('drain: cannot read the engine load from its /metrics; waiting for the grace period');
        unreadable = true;
        zeros = 0;
      } else if (load.running + load.waiting === 0) {
        // Twice in a row: a request accepted just before the first read shows by the second.
        if (++zeros >= 2) return { idle: true, waitedMs: Date.now() - started };
      } else {
        zeros = 0;
      }
      await sleep(Math.max(0, Math.min(drainPollMs, deadline - Date.now())));
    }
    return { idle: false, waitedMs: Date.now() - started };
  };

  // Bounded: with Redis unreachable the record expires within its TTL anyway, and the drain must go on.
  const deregister = async (): Promise<void> => {
    if (registration === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        registration.deregister(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${DEREGISTER_TIMEOUT_MS} ms`)), DEREGISTER_TIMEOUT_MS))),
      ]);
      log(`deregistered engine "${id}"`);
    } catch (err) {
      log(`deregister failed (the record expires within its TTL): ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  };

  const drain = (): Promise<DrainResult> => {
    draining ??= (async () => {
      state = 'draining';
      log(`draining: waiting up to ${drainTimeoutMs} ms for the engine's requests`);
      await deregister();
      const result = await waitIdle();
      log(result.idle ? `engine idle after ${result.waitedMs} ms` : `grace period of ${drainTimeoutMs} ms over with requests still in the engine`);
      await supervisor.stop();
      await closeAll();
      state = 'stopped';
      resolveDone(0);
      return result;
    })();
    return draining;
  };

  const fail = async (): Promise<void> => {
    if (draining !== undefined) return;
    state = 'failed';
    draining = Promise.resolve({ idle: true, waitedMs: 0 });
    await deregister();
    await supervisor.stop();
    await closeAll();
    resolveDone(1);
  };

  return {
    url,
    port,
    id,
    engineUrl,
    kvEventsEndpoint,
    supervisor,
    status,
    drain,
    done,
  };
}

const DEREGISTER_TIMEOUT_MS = 5_000;

function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** A bound ZMQ endpoint as others reach it: a wildcard address replaced by the advertised host. */
export function advertiseEndpoint(bound: string, advertiseHost: string): string {
  const m = /^(tcp):\/\/(.+):(\d+)$/.exec(bound);
  if (m === null) return bound;
  const host = m[2]!;
  const wildcard = host === '0.0.0.0' || host === '*' || host === '[::]' || host === '::';
  return wildcard ? `${m[1]}://${urlHost(advertiseHost)}:${m[3]}` : bound;
}
