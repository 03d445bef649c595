import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Adapter, ApiKeyInfo, ControlPlaneStore, Tenant } from '../core/db/control-plane-store.js';
import { ApiError } from '../core/errors.js';
import { bearerKey, sha256 } from './auth.js';
import type { InvalidationBus } from '../core/state/invalidation-bus.js';

/**
 * The admin HTTP API under /admin/: tenants, API keys, quotas, models, LoRA adapters and usage, over the
 * control-plane store.
 * Guarded by the admin key (Authorization: Bearer <admin key>), compared in constant time: no key -> 401,
 * a wrong key -> 403. The gateway registers this plugin only when an admin key is configured; without one
 * every /admin route is a plain 404, so a deployment that never set a key does not even show the surface.
 * Store failures (ControlPlaneError) become 409 / 404 / 400 in the gateway's error handler.
 */
export interface AdminDeps {
  store: ControlPlaneStore;
  adminKey: string;
  /** Every replica (this one included) drops what it cached of a changed key or tenant. */
  bus: InvalidationBus;
  /**
   * Where each adapter is (by adapter name: one entry per engine holding it or loading it), from the adapters
   * controller's shared state. Given: GET /admin/adapters shows `engines` per adapter; left out: it does not.
   */
  adapterStates?: () => Promise<Map<string, { engine: string; state: string; reason?: string }[]>>;
  /** Unloads a removed adapter from the engines that hold it. */
  adapterRemoved?: (name: string) => Promise<void>;
}

const limit = { type: ['integer', 'null'], minimum: 0 } as const;
const tenantName = { type: 'string', minLength: 1, maxLength: 200 } as const;

const createTenantBody = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: { name: tenantName, weight: { type: 'number', exclusiveMinimum: 0 }, priority: { type: 'integer' }, rpm: limit, tpm: limit },
} as const;
const updateTenantBody = {
  type: 'object',
  additionalProperties: false,
  properties: { name: tenantName, weight: { type: 'number', exclusiveMinimum: 0 }, priority: { type: 'integer' }, rpm: limit, tpm: limit },
} as const;
const createKeyBody = {
  type: 'object',
  additionalProperties: false,
  properties: { expiresAt: { type: 'string', minLength: 1 } },
} as const;
const quotaBody = {
  type: 'object',
  additionalProperties: false,
  required: ['tenant'],
  properties: {
    tenant: tenantName,
    model: { type: ['string', 'null'], minLength: 1 },
    keyId: { type: ['string', 'null'], minLength: 1 },
    rpm: limit,
    tpm: limit,
  },
} as const;
const modelBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { allTenants: { type: 'boolean' } },
} as const;
const adapterBody = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'baseModel', 'source'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 200 },
    baseModel: { type: 'string', minLength: 1 },
    source: { type: 'string', minLength: 1 },
    rank: { type: ['integer', 'null'], minimum: 1, maximum: 2_147_483_647 },
    // null or left out: a public adapter
    tenant: { type: ['string', 'null'], minLength: 1, maxLength: 200 },
  },
} as const;
const usageQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { tenant: { type: 'string', minLength: 1 }, since: { type: 'string', minLength: 1 } },
} as const;

type Limits = { rpm?: number | null; tpm?: number | null };

export async function adminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { store, bus } = deps;
  const changedTenant = (tenantId: string) => bus.publish({ kind: 'tenant', tenantId });
  const adminDigest = sha256(deps.adminKey);

  app.addHook('onRequest', async (request: FastifyRequest) => {
    const key = bearerKey(request.headers.authorization);
    if (key === undefined) throw new ApiError(401, 'missing admin key: send it as "Authorization: Bearer <admin key>"', { code: 'missing_admin_key' });
    if (!timingSafeEqual(sha256(key), adminDigest)) throw new ApiError(403, 'the admin key is not valid', { code: 'invalid_admin_key' });
  });

  const tenantView = async (t: Tenant) => {
    const q = (await store.quotasFor(t.id)).find((x) => x.scope === 'tenant');
    return { id: t.id, name: t.name, weight: t.weight, priority: t.priority, rpm: q?.rpm ?? null, tpm: q?.tpm ?? null, createdAt: t.createdAt.toISOString() };
  };
  const keyView = (k: ApiKeyInfo) => ({
    id: k.id,
    tenantId: k.tenantId,
    prefix: k.prefix,
    createdAt: k.createdAt.toISOString(),
    expiresAt: k.expiresAt?.toISOString() ?? null,
    revokedAt: k.revokedAt?.toISOString() ?? null,
  });
  /** Merges rpm/tpm changes into the tenant-wide quota (a field left out keeps its value; null clears it). */
  const setTenantLimits = async (t: Tenant, changes: Limits) => {
    if (changes.rpm === undefined && changes.tpm === undefined) return;
    const current = (await store.quotasFor(t.id)).find((x) => x.scope === 'tenant');
    await store.setQuota({
      tenant: t.name,
      rpm: changes.rpm !== undefined ? changes.rpm : (current?.rpm ?? null),
      tpm: changes.tpm !== undefined ? changes.tpm : (current?.tpm ?? null),
    });
  };

  app.post<{ Body: { name: string; weight?: number; priority?: number } & Limits }>('/admin/tenants', { schema: { body: createTenantBody } }, async (request, reply) => {
    const t = await store.createTenant(request.body);
    return reply.code(201).send(await tenantView(t));
  });

  app.get('/admin/tenants', async () => ({ object: 'list', data: await Promise.all((await store.listTenants()).map(tenantView)) }));

  app.patch<{ Params: { name: string }; Body: { name?: string; weight?: number; priority?: number } & Limits }>(
    '/admin/tenants/:name',
    { schema: { body: updateTenantBody } },
    async (request) => {
      const { rpm, tpm, ...fields } = request.body;
      const t = await store.updateTenant(request.params.name, fields);
      await setTenantLimits(t, { rpm, tpm });
      await changedTenant(t.id);
      return tenantView(t);
    },
  );

  app.post<{ Params: { name: string }; Body: { expiresAt?: string } | undefined }>(
    '/admin/tenants/:name/keys',
    { schema: { body: createKeyBody } },
    async (request, reply) => {
      const expiresAt = request.body?.expiresAt === undefined ? null : parseTime(request.body.expiresAt, 'expiresAt');
      const created = await store.createApiKey(request.params.name, { expiresAt });
      return reply.code(201).send({ ...keyView(created), key: created.key });
    },
  );

  app.get<{ Params: { name: string } }>('/admin/tenants/:name/keys', async (request) => ({
    object: 'list',
    data: (await store.listApiKeys(request.params.name)).map(keyView),
  }));

  app.post<{ Params: { id: string } }>('/admin/keys/:id/revoke', async (request) => {
    const revoked = await store.revokeApiKey(request.params.id);
    await bus.publish({ kind: 'key', keyId: revoked.id });
    return keyView(revoked);
  });

  app.put<{ Body: { tenant: string; model?: string | null; keyId?: string | null } & Limits }>('/admin/quotas', { schema: { body: quotaBody } }, async (request) => {
    const q = await store.setQuota(request.body);
    const b = request.body;
    const t = await store.getTenantByName(b.tenant);
    if (t !== null) await changedTenant(t.id);
    return q ?? { tenantId: null, model: b.model ?? null, keyId: b.keyId ?? null, rpm: null, tpm: null, scope: null, deleted: true };
  });

  // Models: one nobody registered is open to every tenant; a registered one only to its grants (or all, if so set).
  app.get('/admin/models', async () => ({ object: 'list', data: await store.listModels() }));

  app.put<{ Params: { name: string }; Body: { allTenants?: boolean } | undefined }>(
    '/admin/models/:name',
    { schema: { body: modelBody } },
    async (request) => {
      const m = await store.upsertModel(request.params.name, { allTenants: request.body?.allTenants ?? false });
      await bus.publish({ kind: 'all' });
      return m;
    },
  );

  app.delete<{ Params: { name: string } }>('/admin/models/:name', async (request, reply) => {
    await store.deleteModel(request.params.name);
    await bus.publish({ kind: 'all' });
    return reply.code(204).send();
  });

  app.put<{ Params: { name: string; tenant: string } }>('/admin/models/:name/tenants/:tenant', async (request) => {
    await store.allowModel(request.params.tenant, request.params.name);
    const t = await store.getTenantByName(request.params.tenant);
    if (t !== null) await changedTenant(t.id);
    return { model: request.params.name, tenant: request.params.tenant, allowed: true };
  });

  app.delete<{ Params: { name: string; tenant: string } }>('/admin/models/:name/tenants/:tenant', async (request) => {
    await store.disallowModel(request.params.tenant, request.params.name);
    const t = await store.getTenantByName(request.params.tenant);
    if (t !== null) await changedTenant(t.id);
    return { model: request.params.name, tenant: request.params.tenant, allowed: false };
  });

  // LoRA adapters: the registry. Placement on engines is the adapters controller's; `adapterStates` reports it.
  const adapterView = (a: Adapter) => ({
    name: a.name,
    baseModel: a.baseModel,
    source: a.source,
    rank: a.rank,
    tenant: a.tenantName,
    tenantId: a.tenantId,
    createdAt: a.createdAt.toISOString(),
  });

  app.post<{ Body: { name: string; baseModel: string; source: string; rank?: number | null; tenant?: string | null } }>(
    '/admin/adapters',
    { schema: { body: adapterBody } },
    async (request, reply) => {
      const a = await store.registerAdapter(request.body);
      await bus.publish({ kind: 'all' });
      return reply.code(201).send(adapterView(a));
    },
  );

  app.get('/admin/adapters', async () => {
    const [adapters, states] = await Promise.all([store.listAdapters(), deps.adapterStates?.()]);
    return {
      object: 'list',
      data: adapters.map((a) => (states === undefined ? adapterView(a) : { ...adapterView(a), engines: states.get(a.name) ?? [] })),
    };
  });

  app.delete<{ Params: { name: string } }>('/admin/adapters/:name', async (request, reply) => {
    await store.removeAdapter(request.params.name);
    await bus.publish({ kind: 'all' });
    // Its engine slots are freed now rather than left to an adapter nobody may call any more.
    await deps.adapterRemoved?.(request.params.name);
    return reply.code(204).send();
  });

  app.get<{ Querystring: { tenant?: string; since?: string } }>('/admin/usage', { schema: { querystring: usageQuery } }, async (request) => {
    const since = request.query.since === undefined ? undefined : parseTime(request.query.since, 'since');
    const rows = await store.usageSummary({ tenant: request.query.tenant, since });
    return { object: 'list', since: since?.toISOString() ?? null, data: rows };
  });
}

function parseTime(text: string, param: string): Date {
  const d = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(d.getTime())) {
    throw new ApiError(400, `'${param}' must be an ISO-8601 time, e.g. 2026-01-31T00:00:00Z`, { param, code: 'invalid_request' });
  }
  return d;
}
