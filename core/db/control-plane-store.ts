import { createHash, randomBytes } from 'node:crypto';
import { sqlErrorCode, type SqlClient } from './sql-client.js';

/**
 * The control plane's data: tenants, API keys (stored as SHA-256 only), quotas, model permissions, LoRA adapters
 * and usage records. One class over SqlClient, so PGlite (embedded) and Postgres run the same SQL.
 */

/** The store's own failures, typed so the admin API can map them: conflict -> 409, not_found -> 404, invalid -> 400. */
export class ControlPlaneError extends Error {
  readonly kind: 'conflict' | 'not_found' | 'invalid';
  constructor(kind: 'conflict' | 'not_found' | 'invalid', message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'ControlPlaneError';
    this.kind = kind;
  }
}

export interface Tenant {
  id: string;
  name: string;
  weight: number;
  priority: number;
  createdAt: Date;
}

export interface ApiKeyInfo {
  id: string;
  tenantId: string;
  /** The first characters of the key, e.g. "sk-sy-AbCd", for telling keys apart; not enough to use it. */
  prefix: string;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** The clear key: returned here once and stored nowhere. */
  key: string;
}

export interface KeyLookup {
  keyId: string;
  tenantId: string;
  tenantName: string;
  weight: number;
  priority: number;
  revoked: boolean;
  expired: boolean;
}

export type QuotaScope = 'tenant' | 'model' | 'key' | 'key+model';

export interface Quota {
  tenantId: string;
  model: string | null;
  keyId: string | null;
  /** null: no limit on requests at this scope. */
  rpm: number | null;
  /** null: no limit on tokens at this scope. */
  tpm: number | null;
  scope: QuotaScope;
}

export interface TenantPolicy {
  quotas: Quota[];
  /** Registered models the tenant may not use (404 for it, and hidden from its /v1/models). */
  deniedModels: string[];
}

export interface ModelAccess {
  name: string;
  allTenants: boolean;
}

/** A registered LoRA adapter. Where it is resident is not here: the adapters controller's shared state holds that. */
export interface Adapter {
  /** What clients send as "model", and the engine's lora_name. */
  name: string;
  /** The model it was trained on: only engines serving this model can load it. */
  baseModel: string;
  /** Path or URI the engine loads it from (vLLM's lora_path). */
  source: string;
  rank: number | null;
  /** The owning tenant; null: public, every tenant may use it. */
  tenantId: string | null;
  tenantName: string | null;
  createdAt: Date;
}

export interface UsageRow {
  requestId: string;
  tenantId?: string | null;
  keyId?: string | null;
  model: string;
  adapter?: string | null;
  engine?: string | null;
  promptTokens?: number;
  cachedTokens?: number;
  completionTokens?: number;
  /** HTTP status the client got. */
  status: number;
  ttftMs?: number | null;
  latencyMs?: number | null;
  /** When the request finished; default now(). */
  at?: Date;
}

export interface UsageSummaryRow {
  /** null for requests that never authenticated. */
  tenant: string | null;
  model: string;
  requests: number;
  errors: number;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
}

export const API_KEY_PREFIX = 'sk-sy-';
const DISPLAY_PREFIX_CHARS = API_KEY_PREFIX.length + 4;

/** Lower-case hex SHA-256 of a clear key: what api_keys.digest holds and what findKeyByDigest takes. */
export function apiKeyDigest(clearKey: string): string {
  return createHash('sha256').update(clearKey, 'utf8').digest('hex');
}

/** A fresh key: "sk-sy-" + base64url of 24 random bytes (192 bits). */
export function generateApiKey(): string {
  return API_KEY_PREFIX + randomBytes(24).toString('base64url');
}

type TenantRow = { id: string; name: string; weight: number; priority: number; created_at: Date };
type KeyRow = { id: string; tenant_id: string; prefix: string; created_at: Date; expires_at: Date | null; revoked_at: Date | null };

type AdapterRow = { name: string; base_model: string; source: string; rank: unknown; tenant_id: string | null; tenant_name: string | null; created_at: Date };

const TENANT_COLS = 'id, name, weight, priority, created_at';
/** Over `adapters a LEFT JOIN tenants t ON t.id = a.tenant_id`. */
const ADAPTER_COLS = 'a.name, a.base_model, a.source, a.rank, a.tenant_id, t.name AS tenant_name, a.created_at';
/** Postgres' integer: the widest rank the column holds. */
const MAX_RANK = 2_147_483_647;
const KEY_COLS = 'id, tenant_id, prefix, created_at, expires_at, revoked_at';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Rows per INSERT: 13 parameters each stays far below Postgres' 65535-parameter limit. */
const USAGE_BATCH = 1000;

const toTenant = (r: TenantRow): Tenant => ({
  id: r.id,
  name: r.name,
  weight: Number(r.weight),
  priority: Number(r.priority),
  createdAt: new Date(r.created_at),
});
const toKey = (r: KeyRow): ApiKeyInfo => ({
  id: r.id,
  tenantId: r.tenant_id,
  prefix: r.prefix,
  createdAt: new Date(r.created_at),
  expiresAt: r.expires_at === null ? null : new Date(r.expires_at),
  revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
});
const toAdapter = (r: AdapterRow): Adapter => ({
  name: r.name,
  baseModel: r.base_model,
  source: r.source,
  rank: numOrNull(r.rank),
  tenantId: r.tenant_id,
  tenantName: r.tenant_name,
  createdAt: new Date(r.created_at),
});
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function checkLimit(name: string, v: number | null | undefined): void {
  if (v === null || v === undefined) return;
  if (!Number.isSafeInteger(v) || v < 0) throw new ControlPlaneError('invalid', `${name} must be a whole number >= 0, got ${v}`);
}
function checkTenantFields(f: { weight?: number; priority?: number }): void {
  if (f.weight !== undefined && !(Number.isFinite(f.weight) && f.weight > 0)) throw new ControlPlaneError('invalid', `weight must be a number > 0, got ${f.weight}`);
  if (f.priority !== undefined && !Number.isSafeInteger(f.priority)) throw new ControlPlaneError('invalid', `priority must be a whole number, got ${f.priority}`);
}

export class ControlPlaneStore {
  constructor(private readonly db: SqlClient) {}

  // ------------------------------------------------------------------------------------------ tenants

  /** Creates a tenant, with its tenant-wide quota when rpm or tpm is given. Duplicate name -> conflict. */
  async createTenant(input: { name: string; weight?: number; priority?: number; rpm?: number | null; tpm?: number | null }): Promise<Tenant> {
    if (input.name.trim() === '') throw new ControlPlaneError('invalid', 'tenant name must not be empty');
    checkTenantFields(input);
    checkLimit('rpm', input.rpm);
    checkLimit('tpm', input.tpm);
    try {
      return await this.db.transaction(async (tx) => {
        const { rows } = await tx.query<TenantRow>(
          `INSERT INTO tenants (name, weight, priority) VALUES ($1, $2, $3) RETURNING ${TENANT_COLS}`,
          [input.name, input.weight ?? 1, input.priority ?? 0],
        );
        const tenant = toTenant(rows[0]!);
        if (input.rpm != null || input.tpm != null) {
          await new ControlPlaneStore(tx).setQuota({ tenant: tenant.name, rpm: input.rpm ?? null, tpm: input.tpm ?? null });
        }
        return tenant;
      });
    } catch (err) {
      if (sqlErrorCode(err) === '23505') throw new ControlPlaneError('conflict', `tenant "${input.name}" already exists`, { cause: err });
      throw err;
    }
  }

  /** Changes a tenant's name, weight or priority; unknown tenant -> not_found, name taken -> conflict. */
  async updateTenant(name: string, changes: { name?: string; weight?: number; priority?: number }): Promise<Tenant> {
    checkTenantFields(changes);
    if (changes.name !== undefined && changes.name.trim() === '') throw new ControlPlaneError('invalid', 'tenant name must not be empty');
    try {
      const { rows } = await this.db.query<TenantRow>(
        `UPDATE tenants SET name = COALESCE($2, name), weight = COALESCE($3, weight), priority = COALESCE($4, priority)
         WHERE name = $1 RETURNING ${TENANT_COLS}`,
        [name, changes.name ?? null, changes.weight ?? null, changes.priority ?? null],
      );
      if (rows.length === 0) throw new ControlPlaneError('not_found', `no tenant "${name}"`);
      return toTenant(rows[0]!);
    } catch (err) {
      if (sqlErrorCode(err) === '23505') throw new ControlPlaneError('conflict', `tenant "${changes.name}" already exists`, { cause: err });
      throw err;
    }
  }

  async listTenants(): Promise<Tenant[]> {
    const { rows } = await this.db.query<TenantRow>(`SELECT ${TENANT_COLS} FROM tenants ORDER BY name`);
    return rows.map(toTenant);
  }

  async getTenantByName(name: string): Promise<Tenant | null> {
    const { rows } = await this.db.query<TenantRow>(`SELECT ${TENANT_COLS} FROM tenants WHERE name = $1`, [name]);
    return rows.length === 0 ? null : toTenant(rows[0]!);
  }

  private async requireTenant(name: string): Promise<Tenant> {
    const t = await this.getTenantByName(name);
    if (t === null) throw new ControlPlaneError('not_found', `no tenant "${name}"`);
    return t;
  }

  // --------------------------------------------------------------------------------------------- keys

  /** Creates a key for the tenant (by name). The clear key is in the result and nowhere else, ever. */
  async createApiKey(tenant: string, opts: { expiresAt?: Date | null; /** Import this clear key instead of generating one (dev). */ key?: string } = {}): Promise<CreatedApiKey> {
    const t = await this.requireTenant(tenant);
    if (opts.key !== undefined && opts.key.length < 8) throw new ControlPlaneError('invalid', 'an imported API key must have at least 8 characters');
    const key = opts.key ?? generateApiKey();
    try {
      const { rows } = await this.db.query<KeyRow>(
        `INSERT INTO api_keys (tenant_id, digest, prefix, expires_at) VALUES ($1, $2, $3, $4) RETURNING ${KEY_COLS}`,
        [t.id, apiKeyDigest(key), key.slice(0, DISPLAY_PREFIX_CHARS), opts.expiresAt ?? null],
      );
      return { ...toKey(rows[0]!), key };
    } catch (err) {
      if (sqlErrorCode(err) === '23505') throw new ControlPlaneError('conflict', 'that API key is already registered', { cause: err });
      throw err;
    }
  }

  async listApiKeys(tenant: string): Promise<ApiKeyInfo[]> {
    const t = await this.requireTenant(tenant);
    const { rows } = await this.db.query<KeyRow>(`SELECT ${KEY_COLS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id`, [t.id]);
    return rows.map(toKey);
  }

  /** Revokes a key by id; revoking twice keeps the first time. Unknown id -> not_found. */
  async revokeApiKey(id: string): Promise<ApiKeyInfo> {
    if (!UUID.test(id)) throw new ControlPlaneError('not_found', `no API key "${id}"`);
    const { rows } = await this.db.query<KeyRow>(
      `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING ${KEY_COLS}`,
      [id],
    );
    if (rows.length === 0) throw new ControlPlaneError('not_found', `no API key "${id}"`);
    return toKey(rows[0]!);
  }

  /** The key with this digest (see apiKeyDigest) and its tenant, or null. Revoked/expired keys are returned, flagged. */
  async findKeyByDigest(digest: string): Promise<KeyLookup | null> {
    const { rows } = await this.db.query<{
      id: string; tenant_id: string; name: string; weight: number; priority: number; revoked: boolean; expired: boolean;
    }>(
      `SELECT k.id, k.tenant_id, t.name, t.weight, t.priority,
              k.revoked_at IS NOT NULL AS revoked,
              COALESCE(k.expires_at <= now(), false) AS expired
       FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
       WHERE k.digest = $1`,
      [digest.toLowerCase()],
    );
    const r = rows[0];
    if (r === undefined) return null;
    return {
      keyId: r.id,
      tenantId: r.tenant_id,
      tenantName: r.name,
      weight: Number(r.weight),
      priority: Number(r.priority),
      revoked: r.revoked,
      expired: r.expired,
    };
  }

  // ------------------------------------------------------------------------------------------- quotas

  /**
   * Sets the limits at one scope: the tenant, or one model of it, or one key of it, or one key and model.
   * null clears a limit at that scope; a scope with both limits null is removed.
   */
  async setQuota(input: { tenant: string; model?: string | null; keyId?: string | null; rpm?: number | null; tpm?: number | null }): Promise<Quota | null> {
    checkLimit('rpm', input.rpm);
    checkLimit('tpm', input.tpm);
    const t = await this.requireTenant(input.tenant);
    const model = input.model ?? null;
    const keyId = input.keyId ?? null;
    if (keyId !== null) {
      const ok = UUID.test(keyId) && (await this.db.query('SELECT 1 FROM api_keys WHERE id = $1 AND tenant_id = $2', [keyId, t.id])).rows.length > 0;
      if (!ok) throw new ControlPlaneError('not_found', `tenant "${t.name}" has no API key "${keyId}"`);
    }
    const rpm = input.rpm ?? null;
    const tpm = input.tpm ?? null;
    if (rpm === null && tpm === null) {
      await this.db.query(
        'DELETE FROM quotas WHERE tenant_id = $1 AND model IS NOT DISTINCT FROM $2 AND api_key_id IS NOT DISTINCT FROM $3',
        [t.id, model, keyId],
      );
      return null;
    }
    await this.db.query(
      `INSERT INTO quotas (tenant_id, model, api_key_id, rpm, tpm) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (tenant_id, model, api_key_id) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm, updated_at = now()`,
      [t.id, model, keyId, rpm, tpm],
    );
    return { tenantId: t.id, model, keyId, rpm, tpm, scope: scopeOf(model, keyId) };
  }

  /**
   * Every quota that applies to a request of this tenant (by id) for `model` with key `keyId`: the tenant-wide one,
   * the model's, the key's and the key+model one, whichever exist, most specific first. Each is its own budget;
   * a request must fit all of them. Without `model`/`keyId`, only scopes that do not name one are returned.
   */
  async quotasFor(tenantId: string, model?: string | null, keyId?: string | null): Promise<Quota[]> {
    if (!UUID.test(tenantId)) return [];
    if (keyId != null && !UUID.test(keyId)) keyId = null;
    const { rows } = await this.db.query<{ tenant_id: string; model: string | null; api_key_id: string | null; rpm: unknown; tpm: unknown }>(
      `SELECT tenant_id, model, api_key_id, rpm, tpm FROM quotas
       WHERE tenant_id = $1 AND (model IS NULL OR model = $2) AND (api_key_id IS NULL OR api_key_id = $3)
       ORDER BY (api_key_id IS NOT NULL) DESC, (model IS NOT NULL) DESC`,
      [tenantId, model ?? null, keyId ?? null],
    );
    return rows.map((r) => ({
      tenantId: r.tenant_id,
      model: r.model,
      keyId: r.api_key_id,
      rpm: numOrNull(r.rpm),
      tpm: numOrNull(r.tpm),
      scope: scopeOf(r.model, r.api_key_id),
    }));
  }

  /** Every quota of a tenant (by name), for listings. */
  async listQuotas(tenant: string): Promise<Quota[]> {
    const t = await this.requireTenant(tenant);
    const { rows } = await this.db.query<{ model: string | null; api_key_id: string | null; rpm: unknown; tpm: unknown }>(
      `SELECT model, api_key_id, rpm, tpm FROM quotas WHERE tenant_id = $1
       ORDER BY (api_key_id IS NOT NULL), (model IS NOT NULL), model, api_key_id`,
      [t.id],
    );
    return rows.map((r) => ({ tenantId: t.id, model: r.model, keyId: r.api_key_id, rpm: numOrNull(r.rpm), tpm: numOrNull(r.tpm), scope: scopeOf(r.model, r.api_key_id) }));
  }

  // ------------------------------------------------------------------------------------------- models

  /** Registers a model (idempotent); `allTenants` sets whether every tenant may use it. */
  async upsertModel(name: string, opts: { allTenants?: boolean } = {}): Promise<ModelAccess> {
    if (name.trim() === '') throw new ControlPlaneError('invalid', 'model name must not be empty');
    const { rows } = await this.db.query<{ name: string; all_tenants: boolean }>(
      opts.allTenants === undefined
        ? `INSERT INTO models (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING name, all_tenants`
        : `INSERT INTO models (name, all_tenants) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET all_tenants = EXCLUDED.all_tenants RETURNING name, all_tenants`,
      opts.allTenants === undefined ? [name] : [name, opts.allTenants],
    );
    return { name: rows[0]!.name, allTenants: rows[0]!.all_tenants };
  }

  /** Lets the tenant (by name) use the model, registering the model if needed. Idempotent. */
  async allowModel(tenant: string, model: string): Promise<void> {
    const t = await this.requireTenant(tenant);
    await this.upsertModel(model);
    await this.db.query('INSERT INTO model_access (model, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [model, t.id]);
  }

  /** Withdraws a per-tenant grant (an all-tenants model stays visible). */
  async disallowModel(tenant: string, model: string): Promise<void> {
    const t = await this.requireTenant(tenant);
    await this.db.query('DELETE FROM model_access WHERE model = $1 AND tenant_id = $2', [model, t.id]);
  }

  /** Every model with its grants, for listings. */
  async listModels(): Promise<(ModelAccess & { tenants: string[] })[]> {
    const { rows } = await this.db.query<{ name: string; all_tenants: boolean; tenants: string[] | null }>(
      `SELECT m.name, m.all_tenants,
              array_remove(array_agg(t.name ORDER BY t.name), NULL) AS tenants
       FROM models m
       LEFT JOIN model_access a ON a.model = m.name
       LEFT JOIN tenants t ON t.id = a.tenant_id
       GROUP BY m.name, m.all_tenants
       ORDER BY m.name`,
    );
    return rows.map((r) => ({ name: r.name, allTenants: r.all_tenants, tenants: r.tenants ?? [] }));
  }

  /** Forgets a registered model and its grants: it becomes open to every tenant again. */
  async deleteModel(name: string): Promise<void> {
    const { rows } = await this.db.query('DELETE FROM models WHERE name = $1 RETURNING name', [name]);
    if (rows.length === 0) throw new ControlPlaneError('not_found', `no registered model "${name}"`);
  }

  /**
   * What the gateway enforces for a tenant (by id), read in one round trip: every quota of the tenant, and the
   * registered models it may not use. A model nobody registered is open to every tenant.
   */
  async tenantPolicy(tenantId: string): Promise<TenantPolicy> {
    if (!UUID.test(tenantId)) return { quotas: [], deniedModels: [] };
    const { rows } = await this.db.query<{ kind: string; model: string | null; api_key_id: string | null; rpm: unknown; tpm: unknown }>(
      `SELECT 'quota' AS kind, model, api_key_id, rpm, tpm FROM quotas WHERE tenant_id = $1
       UNION ALL
       SELECT 'denied', m.name, NULL, NULL, NULL FROM models m
       WHERE NOT m.all_tenants AND NOT EXISTS (SELECT 1 FROM model_access a WHERE a.model = m.name AND a.tenant_id = $1)`,
      [tenantId],
    );
    const quotas: Quota[] = [];
    const deniedModels: string[] = [];
    for (const r of rows) {
      if (r.kind === 'denied') deniedModels.push(r.model!);
      else quotas.push({ tenantId, model: r.model, keyId: r.api_key_id, rpm: numOrNull(r.rpm), tpm: numOrNull(r.tpm), scope: scopeOf(r.model, r.api_key_id) });
    }
    return { quotas, deniedModels };
  }

  // ----------------------------------------------------------------------------------------- adapters

  /**
   * Registers a LoRA adapter on `baseModel`, owned by `tenant` (by name) or public (null or left out). A name
   * already registered -> conflict (re-registering is remove + register, so nobody's adapter is replaced by
   * accident); an unknown tenant -> not_found; an empty field or a rank that is not a whole number > 0 -> invalid.
   */
  async registerAdapter(input: { name: string; baseModel: string; source: string; rank?: number | null; tenant?: string | null }): Promise<Adapter> {
    for (const [field, v] of [['name', input.name], ['baseModel', input.baseModel], ['source', input.source]] as const) {
      if (typeof v !== 'string' || v.trim() === '') throw new ControlPlaneError('invalid', `adapter ${field} must not be empty`);
    }
    const rank = input.rank ?? null;
    if (rank !== null && !(Number.isSafeInteger(rank) && rank > 0 && rank <= MAX_RANK)) {
      throw new ControlPlaneError('invalid', `rank must be a whole number > 0, got ${rank}`);
    }
    const tenant = input.tenant == null ? null : await this.requireTenant(input.tenant);
    try {
      const { rows } = await this.db.query<Pick<AdapterRow, 'created_at'>>(
        'INSERT INTO adapters (name, base_model, source, rank, tenant_id) VALUES ($1, $2, $3, $4, $5) RETURNING created_at',
        [input.name, input.baseModel, input.source, rank, tenant?.id ?? null],
      );
      return {
        name: input.name,
        baseModel: input.baseModel,
        source: input.source,
        rank,
        tenantId: tenant?.id ?? null,
        tenantName: tenant?.name ?? null,
        createdAt: new Date(rows[0]!.created_at),
      };
    } catch (err) {
      const code = sqlErrorCode(err);
      if (code === '23505') throw new ControlPlaneError('conflict', `adapter "${input.name}" already exists`, { cause: err });
      // The tenant was deleted between the lookup and the insert.
      if (code === '23503') throw new ControlPlaneError('not_found', `no tenant "${input.tenant}"`, { cause: err });
      throw err;
    }
  }

  /** Every adapter with its owner's name, by name. */
  async listAdapters(): Promise<Adapter[]> {
    const { rows } = await this.db.query<AdapterRow>(`SELECT ${ADAPTER_COLS} FROM adapters a LEFT JOIN tenants t ON t.id = a.tenant_id ORDER BY a.name`);
    return rows.map(toAdapter);
  }

  async getAdapter(name: string): Promise<Adapter | null> {
    const { rows } = await this.db.query<AdapterRow>(`SELECT ${ADAPTER_COLS} FROM adapters a LEFT JOIN tenants t ON t.id = a.tenant_id WHERE a.name = $1`, [name]);
    return rows.length === 0 ? null : toAdapter(rows[0]!);
  }

  /** Forgets an adapter; unknown name -> not_found. Unloading it from engines is the controller's job. */
  async removeAdapter(name: string): Promise<void> {
    const { rows } = await this.db.query('DELETE FROM adapters WHERE name = $1 RETURNING name', [name]);
    if (rows.length === 0) throw new ControlPlaneError('not_found', `no adapter "${name}"`);
  }

  /**
   * The adapters a caller may use, by name. A tenant (by id) sees the public ones and its own. `null` is a caller
   * with no tenant: a config key (`auth.keys`), which is an operator's key and, as for models and limits, is not
   * restricted: it sees every adapter, every tenant's included. A tenant id that is not a UUID sees the public ones.
   */
  async adaptersVisibleTo(tenantId: string | null): Promise<Adapter[]> {
    const base = `SELECT ${ADAPTER_COLS} FROM adapters a LEFT JOIN tenants t ON t.id = a.tenant_id`;
    const { rows } =
      tenantId === null
        ? await this.db.query<AdapterRow>(`${base} ORDER BY a.name`)
        : UUID.test(tenantId)
          ? await this.db.query<AdapterRow>(`${base} WHERE a.tenant_id IS NULL OR a.tenant_id = $1 ORDER BY a.name`, [tenantId])
          : await this.db.query<AdapterRow>(`${base} WHERE a.tenant_id IS NULL ORDER BY a.name`);
    return rows.map(toAdapter);
  }

  // -------------------------------------------------------------------------------------------- usage

  /**
   * Inserts usage rows in batches; a request id already stored is skipped. Returns how many rows were new. Each
   * batch is one JSON parameter unpacked by the server (json_to_recordset): cheaper than binding 13 parameters a
   * row, which matters most in PGlite, where it runs in the gateway's own process.
   */
  async insertUsage(rows: readonly UsageRow[]): Promise<number> {
    let inserted = 0;
    for (let i = 0; i < rows.length; i += USAGE_BATCH) {
      const batch = rows.slice(i, i + USAGE_BATCH).map((r) => ({
        request_id: r.requestId,
        tenant_id: r.tenantId ?? null,
        api_key_id: r.keyId ?? null,
        model: r.model,
        adapter: r.adapter ?? null,
        engine: r.engine ?? null,
        prompt_tokens: r.promptTokens ?? 0,
        cached_tokens: r.cachedTokens ?? 0,
        completion_tokens: r.completionTokens ?? 0,
        status: r.status,
        ttft_ms: r.ttftMs ?? null,
        latency_ms: r.latencyMs ?? null,
        at: (r.at ?? new Date()).toISOString(),
      }));
      const res = await this.db.query<{ request_id: string }>(
        `INSERT INTO usage (request_id, tenant_id, api_key_id, model, adapter, engine,
                            prompt_tokens, cached_tokens, completion_tokens, status, ttft_ms, latency_ms, at)
         SELECT * FROM json_to_recordset($1::json) AS r(
           request_id text, tenant_id uuid, api_key_id uuid, model text, adapter text, engine text,
           prompt_tokens integer, cached_tokens integer, completion_tokens integer, status integer,
           ttft_ms double precision, latency_ms double precision, at timestamptz)
         ON CONFLICT (request_id) DO NOTHING
         RETURNING request_id`,
        [JSON.stringify(batch)],
      );
      inserted += res.rows.length;
    }
    return inserted;
  }

  /** Sums per tenant and model, optionally for one tenant (by name) and from a time on. */
  async usageSummary(filter: { tenant?: string; since?: Date } = {}): Promise<UsageSummaryRow[]> {
    let tenantId: string | null = null;
    if (filter.tenant !== undefined) tenantId = (await this.requireTenant(filter.tenant)).id;
    const { rows } = await this.db.query<{
      tenant: string | null; model: string; requests: unknown; errors: unknown; prompt: unknown; cached: unknown; completion: unknown;
    }>(
      `SELECT t.name AS tenant, u.model,
              count(*) AS requests,
              count(*) FILTER (WHERE u.status >= 400) AS errors,
              COALESCE(sum(u.prompt_tokens), 0) AS prompt,
              COALESCE(sum(u.cached_tokens), 0) AS cached,
              COALESCE(sum(u.completion_tokens), 0) AS completion
       FROM usage u LEFT JOIN tenants t ON t.id = u.tenant_id
       WHERE ($1::uuid IS NULL OR u.tenant_id = $1::uuid) AND ($2::timestamptz IS NULL OR u.at >= $2::timestamptz)
       GROUP BY t.name, u.model
       ORDER BY t.name NULLS LAST, u.model`,
      [tenantId, filter.since ?? null],
    );
    return rows.map((r) => ({
      tenant: r.tenant,
      model: r.model,
      requests: Number(r.requests),
      errors: Number(r.errors),
      promptTokens: Number(r.prompt),
      cachedTokens: Number(r.cached),
      completionTokens: Number(r.completion),
    }));
  }
}

function scopeOf(model: string | null, keyId: string | null): QuotaScope {
  if (keyId !== null) return model !== null ? 'key+model' : 'key';
  return model !== null ? 'model' : 'tenant';
}
