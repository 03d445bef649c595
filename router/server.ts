import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import type { Config } from '../core/config.js';
import type { EngineSpec } from '../core/engine.js';
import { ControlPlaneError, ControlPlaneStore } from '../core/db/control-plane-store.js';
import { migrate } from '../core/db/migrate.js';
import { openDatabase, type SqlClient } from '../core/db/sql-client.js';
import { discoverFromRegistry } from '../core/discovery/redis-registry.js';
import { ApiError } from '../core/errors.js';
import { createMetricsRegistry } from '../core/metrics.js';
import { adminRoutes } from './admin.js';
import { bearerKey, composeResolvers, type Principal, type PrincipalResolver } from './auth.js';
import { servedModels } from './engines/models.js';
import { EngineRegistry } from './engines/registry.js';
import { createGatewayMetrics, type GatewayMetrics } from './metrics.js';
import { PrefixTracker } from './prefix.js';
import { proxyInference, type Endpoint, type ProxyDeps } from './proxy.js';
import { Calibration } from './placement/calibration.js';
import { createGatewayPlacement } from './placement/gateway-placement.js';
import type { IndexAudit } from './placement/index-audit.js';
import { chatBodySchema, completionBodySchema, embeddingBodySchema } from './schemas.js';
import { SessionAffinity } from './sessions.js';
import { AdaptersController } from '../adapters-controller/controller.js';
import type { AdapterStateStore } from '../core/state/adapter-state.js';
import { AdapterRouter } from './adapters.js';
import { CapacityGate } from './capacity.js';
import { FairQueue } from './fair-queue.js';
import { openSharedState, type SharedState } from './shared-state.js';
import { tenantKeyResolver, type TenantKeyResolver } from './tenant-auth.js';
import { tenantPolicyCache, type TenantPolicyCache } from './tenant-policy.js';
import { recordUsage } from './proxy.js';

export interface GatewayOptions {
  readonly config: Config;
  /** Keys from config (checked before the database's). */
  readonly resolver: PrincipalResolver;
  /** Engines to route to; defaults to the config's. */
  readonly engines?: readonly EngineSpec[];
  /**
   * The control-plane database. Undefined: opened from `config.database` (Postgres, else PGlite) and closed with
   * the gateway. A client: used as is (migrated, not closed). null: no control plane (config keys only, no /admin).
   */
  readonly db?: SqlClient | null;
  /** The admin key guarding /admin/ (the caller reads it from env `config.admin.keyEnv`); unset or empty: no /admin. */
  readonly adminKey?: string;
  /** For discovery.kubernetes; default the in-cluster config or ~/.kube/config. */
  readonly kubeConfig?: KubeConfig;
}

export interface Gateway {
  readonly app: FastifyInstance;
  readonly registry: EngineRegistry;
  readonly metricsRegistry: Registry;
  /** The control-plane store, when the gateway has a database. */
  readonly store: ControlPlaneStore | undefined;
  /** Database keys -> tenant, with its LRU; undefined without a database. */
  readonly tenantKeys: TenantKeyResolver | undefined;
  /** The prefix index checked against the engines' cached tokens; undefined when kvcache is off. */
  readonly audit: IndexAudit | undefined;
  /**
   * Replaces the engines `source` contributes beside the configured ones (as discovery does), e.g. the replicas a
   * local autoscaler starts and stops.
   */
  setEngines(source: string, engines: readonly EngineSpec[]): void;
  /** Probes the engines once, then listens; resolves to the gateway's base URL. */
  listen(): Promise<string>;
  close(): Promise<void>;
}

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

export async function createGateway(opts: GatewayOptions): Promise<Gateway> {
  const { config } = opts;
  const app = Fastify({
    logger: { level: config.log.level, redact: ['req.headers.authorization'] },
    bodyLimit: config.server.bodyLimitBytes,
    // Reuse a client's request id when it is safe to log; otherwise make one.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && requestIdPattern.test(given) ? given : randomUUID();
    },
    // Types are checked, not coerced: "stream": "true" is a client bug worth a 400.
    // Unknown fields are refused where a schema says additionalProperties: false (the admin API), not dropped.
    ajv: { customOptions: { coerceTypes: false, allErrors: false, removeAdditional: false } },
    return503OnClosing: true,
  });

  const metricsRegistry = createMetricsRegistry({ processMetrics: true });
  const engines = opts.engines ?? config.engines;
  const registry = new EngineRegistry(engines, {
    healthIntervalMs: config.health.intervalMs,
    healthTimeoutMs: config.health.timeoutMs,
    failureThreshold: config.health.failureThreshold,
    scrapeIntervalMs: config.scrape.intervalMs,
    scrapeTimeoutMs: config.scrape.timeoutMs,
    connections: config.upstream.connections,
    onHealthChange: (id, healthy) => {
      app.log.info({ engine: id, healthy }, healthy ? 'engine healthy' : 'engine unhealthy');
      queue?.pump();
      // An engine back from a restart may have lost its adapters: look now rather than at the next round.
      controller?.nudge();
    },
    // A scrape may show an engine that stopped being saturated.
    onLoad: () => queue?.pump(),
    // Its cache is empty now: prompts must stop being sent back there for hits it no longer has.
    onRestart: (id, why) => {
      app.log.info({ engine: id, why }, 'engine restarted; the prefix index forgets its blocks');
      metrics.engineRestarts.inc({ engine: id, reason: why });
      prefix?.forgetEngine(id);
    },
  });
  const queue = config.queue.enabled
    ? new FairQueue({
        maxQueued: config.queue.maxQueued,
        promptWeight: config.queue.promptWeight,
        completionWeight: config.queue.completionWeight,
        onDispatch: (waitedMs) => metrics.queueWait.observe(waitedMs / 1000),
      })
    : undefined;
  const calibration = new Calibration(config.routing.engineModel);
  const metrics = createGatewayMetrics(metricsRegistry, {
    engines: () => registry.snapshot(),
    queueLength: () => queue?.waitingByPriority() ?? new Map(),
    adaptersResident: () => adapters?.residentPerEngine() ?? new Map(),
    perf: (spec) => calibration.perf(spec),
  });
  const prefix = config.kvcache.enabled ? await PrefixTracker.create(config, metricsRegistry, app.log) : undefined;
  prefix?.setEngines(engines);
  const { placement, audit, forgetEngine } = createGatewayPlacement({ config, registry, prefix, calibration, metrics, metricsRegistry, log: app.log });

  // The control plane last, so nothing above can fail and leave it open.
  let db: SqlClient | undefined;
  let ownsDb = false;
  if (opts.db === undefined) {
    try {
      db = await openDatabase({ url: config.database.url, dataDir: config.database.dataDir });
    } catch (err) {
      await prefix?.close();
      throw err;
    }
    ownsDb = true;
  } else if (opts.db !== null) {
    db = opts.db;
  }
  let store: ControlPlaneStore | undefined;
  let tenantKeys: TenantKeyResolver | undefined;
  let policies: TenantPolicyCache | undefined;
  if (db !== undefined) {
    try {
      await migrate(db);
    } catch (err) {
      if (ownsDb) await db.close().catch(() => {});
      await prefix?.close();
      throw err;
    }
    store = new ControlPlaneStore(db);
    const cache = { ttlMs: config.auth.keyCacheTtlMs, maxEntries: config.auth.keyCacheMaxEntries };
    tenantKeys = tenantKeyResolver(store, cache);
    policies = tenantPolicyCache(store, cache);
  }
  const resolver = tenantKeys === undefined ? opts.resolver : composeResolvers(opts.resolver, tenantKeys);
  const shared: SharedState = openSharedState(config, store, metrics, app.log);
  shared.bus.subscribe((message) => {
    if (message.kind === 'key') tenantKeys?.evictKey(message.keyId);
    else if (message.kind === 'tenant') {
      tenantKeys?.evictTenant(message.tenantId);
      policies?.evictTenant(message.tenantId);
    } else {
      tenantKeys?.clear();
      policies?.clear();
      adapters?.invalidate();
      controller?.nudge();
    }
  });
  const controller = store === undefined ? undefined : adaptersController(config, store, shared, registry, metrics, app.log);
  const adapters =
    store === undefined || controller === undefined
      ? undefined
      : new AdapterRouter({
          listAdapters: () => store!.listAdapters(),
          state: shared.adapters,
          registry,
          load: (adapter, engine) => controller.loadNow(adapter, engine),
          holder: controller.holderId,
          catalogTtlMs: config.auth.keyCacheTtlMs,
          refreshMs: config.adapters.residencyRefreshMs,
          onColdStart: (_adapter, waitedMs, outcome) => metrics.coldStartWait.observe({ outcome }, waitedMs / 1000),
        });
  if (config.adapters.controller) controller?.start();
  // Engines from the config, plus those discovered (sidecars' registry, Kubernetes); configured ids win.
  const discovered = new Map<string, readonly EngineSpec[]>();
  const applyDiscovered = (source: string, found: readonly EngineSpec[]) => {
    discovered.set(source, found);
    const all = [...engines];
    const known = new Set(engines.map((e) => e.id));
    for (const list of discovered.values()) {
      for (const e of list) {
        if (known.has(e.id)) continue;
        known.add(e.id);
        all.push(e);
      }
    }
    app.log.info({ source, engines: found.map((e) => e.id) }, 'discovered engines changed');
    for (const e of registry.snapshot()) if (!known.has(e.spec.id)) forgetEngine(e.spec.id);
    registry.setEngines(all).catch((err: unknown) => app.log.error({ err }, 'could not apply the discovered engines'));
    prefix?.setEngines(all);
  };
  const registryDiscovery =
    config.discovery.registry.enabled && shared.redis !== undefined
      ? discoverFromRegistry({
          redis: shared.redis,
          prefix: config.discovery.registry.prefix,
          intervalMs: config.discovery.registry.intervalMs,
          onChange: (found) => applyDiscovered('registry', found),
          onError: (err) => app.log.warn({ err: (err as Error).message }, 'engine registry unreadable; keeping the last known engines'),
        })
      : undefined;
  const k8s = config.discovery.kubernetes;
  // Loaded only when used: the Kubernetes client takes most of a second to import.
  const kubernetesDiscovery = !k8s.enabled
    ? undefined
    : await (await import('../core/discovery/kubernetes.js')).startKubernetesDiscovery({
        kubeConfig: opts.kubeConfig,
        namespace: k8s.namespace,
        labelSelector: k8s.labelSelector,
        port: k8s.port,
        models: k8s.models,
        kind: k8s.kind,
        onChange: (found) => applyDiscovered('kubernetes', found),
        onError: (err) => app.log.warn({ err: err.message }, 'kubernetes discovery failed; retrying, keeping the last known engines'),
      }).catch(async (err: unknown) => {
        // Nothing is listening yet: undo what was opened above, then fail start-up with the reason (e.g. RBAC).
        registryDiscovery?.stop();
        await controller?.stop();
        await shared.close();
        await prefix?.close();
        if (ownsDb) await db?.close();
        throw err;
      });
  const pools = new Map(config.models.flatMap((m) => (m.pools === undefined ? [] : [[m.name, m.pools] as const])));
  const deps: ProxyDeps = {
    prefix,
    sessions: new SessionAffinity(config.session),
    config,
    registry,
    placement,
    metrics,
    pools,
    capacity: new CapacityGate(registry, config.queue.saturation, pools),
    admission: { policies, limiter: shared.limiter, limits: config.limits, metrics },
    queue,
    usage: shared.usage,
    adapters,
  };

  app.decorateRequest('rawBody', null);
  app.decorateRequest('principal', null);
  app.decorateRequest('usageRecorded', false);

  // Every body is read as JSON whatever its content type (curl -d sends form encoding), and the bytes are kept
  // so the engine receives exactly what the client sent.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer;
    request.rawBody = bytes;
    try {
      done(null, JSON.parse(bytes.toString('utf8')));
    } catch (err) {
      done(new ApiError(400, `the body is not valid JSON: ${(err as Error).message}`, { code: 'invalid_json' }), undefined);
    }
  });

  app.setErrorHandler((error: FastifyError | ApiError | ControlPlaneError, request, reply) => {
    const apiError = toApiError(error);
    if (apiError.status >= 500 && (!(error instanceof ApiError) || error.cause !== undefined)) request.log.error({ err: error }, 'request failed');
    void reply.code(apiError.status).headers(apiError.headers).send(apiError.toJSON());
  });
  app.setNotFoundHandler((request, reply) => {
    const err = new ApiError(404, `no route for ${request.method} ${request.url.split('?')[0]}`, { code: 'unknown_url' });
    void reply.code(404).send(err.toJSON());
  });

  // 200 even when degraded: an index that disagrees with its engines must not get the gateway killed by a liveness probe.
  app.get('/healthz', async () => {
    const checks = audit?.degraded() ?? [];
    return checks.length === 0 ? { status: 'ok' } : { status: 'degraded', checks };
  });
  app.get('/readyz', async (_request, reply) => {
    const healthy = registry.snapshot().filter((e) => e.healthy).length;
    return reply.code(healthy > 0 ? 200 : 503).send({ status: healthy > 0 ? 'ready' : 'no healthy engine', healthyEngines: healthy });
  });
  app.get('/metrics', async (_request, reply) => reply.type(metricsRegistry.contentType).send(await metricsRegistry.metrics()));

  const authenticate = async (request: FastifyRequest) => {
    const key = bearerKey(request.headers.authorization);
    if (key === undefined) {
      throw new ApiError(401, 'missing API key: send it as "Authorization: Bearer <key>"', { code: 'missing_api_key' });
    }
    let principal: Principal | undefined;
    try {
      principal = await resolver.resolve(key);
    } catch (err) {
      request.log.error({ err }, 'API key lookup failed');
      throw new ApiError(503, 'the API key store is unavailable; retry shortly', { code: 'key_store_unavailable' });
    }
    if (principal === undefined) throw new ApiError(401, 'invalid API key', { code: 'invalid_api_key' });
    request.principal = principal;
  };

  if (store !== undefined && tenantKeys !== undefined && opts.adminKey !== undefined && opts.adminKey !== '') {
    const adminDeps = { store, bus: shared.bus, adminKey: opts.adminKey, adapterStates: () => placementsByAdapter(shared.adapters), adapterRemoved: (name: string) => controller?.unloadEverywhere(name) ?? Promise.resolve() };
    app.register(async (admin) => adminRoutes(admin, adminDeps));
  }

  app.register(async (v1) => {
    // onRequest runs before the body is read, so an unauthenticated client cannot make us parse anything.
    v1.addHook('onRequest', authenticate);
    // Requests the proxy never saw (a body that failed validation, one too large) still leave a usage record.
    v1.addHook('onResponse', async (request, reply) => {
      if (request.principal === null || request.method !== 'POST') return;
      const { principal } = request;
      const model = (request.body as { model?: unknown } | undefined)?.model;
      recordUsage(request, deps, {
        tenantId: principal.tenant?.id ?? null,
        keyId: principal.keyId ?? null,
        model: typeof model === 'string' ? model : '',
        status: reply.statusCode,
        latencyMs: reply.elapsedTime,
      });
    });
    v1.get('/v1/models', async (request) => {
      const tenant = request.principal?.tenant;
      let denied: ReadonlySet<string> | undefined;
      try {
        denied = tenant === undefined || policies === undefined ? undefined : (await policies.get(tenant.id)).deniedModels;
      } catch (err) {
        throw new ApiError(503, 'the control-plane database is unavailable; retry shortly', { code: 'control_plane_unavailable', cause: err });
      }
      const served = servedModels(registry.snapshot()).filter((id) => denied === undefined || !denied.has(id));
      const data: { id: string; object: 'model'; created: number; owned_by: string; root: string; parent: string | null }[] = served.map((id) => ({
        id,
        object: 'model',
        created: 0,
        owned_by: 'switchyard',
        root: id,
        parent: null,
      }));
      // Adapters as vLLM lists them: `parent` is the base model. Only those the caller may use, on a base it may use.
      const visible = adapters === undefined ? [] : await adapters.visibleTo(request.principal!);
      for (const a of visible) {
        if (!served.includes(a.baseModel)) continue;
        data.push({ id: a.name, object: 'model', created: Math.floor(a.createdAt.getTime() / 1000), owned_by: a.tenantName ?? 'switchyard', root: a.source, parent: a.baseModel });
      }
      return { object: 'list', data };
    });
    const route = (url: string, endpoint: Endpoint, schema: object) =>
      v1.post(url, { schema: { body: schema } }, (request, reply) => proxyInference(endpoint, request, reply, deps));
    route('/v1/chat/completions', 'chat', chatBodySchema);
    route('/v1/completions', 'completions', completionBodySchema);
    route('/v1/embeddings', 'embeddings', embeddingBodySchema);
  });

  return {
    app,
    registry,
    metricsRegistry,
    store,
    tenantKeys,
    audit,
    setEngines: applyDiscovered,
    async listen() {
      await registry.start();
      return app.listen({ host: config.server.host, port: config.server.port });
    },
    async close() {
      registryDiscovery?.stop();
      await kubernetesDiscovery?.stop();
      await app.close();
      await registry.stop();
      await prefix?.close();
      await controller?.stop();
      // After the last request: its usage event is flushed before the database closes.
      await shared.close();
      if (ownsDb) await db?.close();
    },
  };
}

/** The placement controller over the registry and this gateway's engines; started unless adapters.controller is off. */
function adaptersController(
  config: Config,
  store: ControlPlaneStore,
  shared: SharedState,
  registry: EngineRegistry,
  metrics: GatewayMetrics,
  log: FastifyBaseLogger,
): AdaptersController {
  return new AdaptersController({
    store: shared.adapters,
    engines: () =>
      registry.snapshot().map((e) => ({ id: e.spec.id, url: e.spec.url, kind: e.spec.kind, models: e.spec.models, healthy: e.healthy, sidecarUrl: e.spec.sidecarUrl })),
    adapters: async () => (await store.listAdapters()).map((a) => ({ name: a.name, baseModel: a.baseModel, source: a.source })),
    options: {
      intervalMs: config.adapters.intervalMs,
      leaseTtlMs: config.adapters.leaseTtlMs,
      placement: {
        maxAdaptersPerEngine: config.adapters.maxPerEngine,
        requestsPerReplica: config.adapters.requestsPerReplica,
        minResidencyMs: config.adapters.minResidencyMs,
      },
    },
    hooks: {
      onLoad: (engine, _adapter, ms) => {
        metrics.adapterLoads.inc({ engine });
        metrics.adapterLoadSeconds.observe(ms / 1000);
      },
      onUnload: (engine) => metrics.adapterUnloads.inc({ engine }),
      onFailure: (engine, _adapter, _reason, operation) => metrics.adapterFailures.inc({ engine, operation }),
    },
    logger: log,
  });
}

/** Every adapter's state on every engine, for the admin API's listing. */
async function placementsByAdapter(state: AdapterStateStore): Promise<Map<string, { engine: string; state: string; reason?: string }[]>> {
  const out = new Map<string, { engine: string; state: string; reason?: string }[]>();
  for (const p of await state.placements()) {
    let list = out.get(p.adapter);
    if (list === undefined) out.set(p.adapter, (list = []));
    list.push(p.reason === undefined ? { engine: p.engine, state: p.state } : { engine: p.engine, state: p.state, reason: p.reason });
  }
  return out;
}

function toApiError(error: FastifyError | ApiError | ControlPlaneError): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof ControlPlaneError) {
    const status = error.kind === 'conflict' ? 409 : error.kind === 'not_found' ? 404 : 400;
    return new ApiError(status, error.message, { code: error.kind === 'not_found' ? 'not_found' : error.kind === 'conflict' ? 'conflict' : 'invalid_request' });
  }
  if (error.validation !== undefined && error.validation.length > 0) {
    const first = error.validation[0]!;
    const missing = (first.params as { missingProperty?: string }).missingProperty;
    const path = first.instancePath.replace(/^\//, '').replace(/\/(\d+)/g, '[$1]').replace(/\//g, '.');
    const param = missing !== undefined ? (path === '' ? missing : `${path}.${missing}`) : path || null;
    const message = missing !== undefined ? `'${param}' is a required property` : `'${param ?? 'body'}' ${first.message ?? 'is invalid'}`;
    return new ApiError(400, message, { param, code: 'invalid_request' });
  }
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'the request body is larger than the configured limit', { code: 'request_too_large' });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError(400, 'the content-length does not match the body', { code: 'invalid_request' });
  }
  const status = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500;
  return new ApiError(status, status >= 500 ? 'internal error' : error.message);
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** The body exactly as received, forwarded to the engine without re-serialising. */
    rawBody: Buffer | null;
    /** Set once the request's usage event is recorded, so it is recorded once. */
    usageRecorded: boolean;
  }
}
