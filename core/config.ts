import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_BLOCK_SIZE } from '../kvcache/block-hash.js';
import { DEFAULT_MAX_ENTRIES } from '../kvcache/index/create.js';
import { VLLM_DEFAULT_BLOCK_SIZE } from '../kvcache/precise-hash.js';
import { TOKENIZER_NAMES } from '../kvcache/tokenizers/tokenizer.js';
import { POLICY_NAMES, type PolicyName } from '../router/routing/pipeline.js';
import { DEFAULT_ENGINE_PERF } from './engine.js';

/**
 * The one config loader: a YAML file, then environment overrides, then one schema check. Every part of
 * Switchyard reads its settings from the object this returns; nothing else reads process.env for settings.
 */

const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const hex64 = /^[0-9a-f]{64}$/;

/** An engine's figures (core/engine.ts EnginePerf), any of them: an engine's own, or routing.engineModel's defaults. */
const PerfSchema = z
  .object({ prefillTokensPerSec: z.number().positive(), decodeBaseMs: z.number().positive(), decodeMsPer1kKvTokens: z.number().positive() })
  .partial()
  .strict();

const EngineSchema = z
  .object({
    id: z.string().regex(idPattern, 'letters, digits, ".", "_" or "-", starting with a letter or digit'),
    url: z
      .string()
      .regex(/^https?:\/\/[^/\s]+\/?$/, 'an http(s) base URL without a path, e.g. http://127.0.0.1:8001')
      .transform((u) => u.replace(/\/$/, '')),
    kind: z.enum(['vllm', 'sglang', 'llamacpp']).default('vllm'),
    models: z.array(z.string().min(1)).min(1, 'an engine serves at least one model'),
    labels: z.record(z.string(), z.string()).default({}),
    /** The engine's KV capacity: the prefix index never believes it holds more. */
    kvCapacityTokens: z.number().int().positive().optional(),
    /** The engine's KV events PUB socket (vLLM --kv-events-config endpoint); needs kvcache.hashing: vllm. */
    kvEventsEndpoint: z.string().regex(/^tcp:\/\/[^\s]+:\d+$/, 'a ZMQ endpoint, e.g. tcp://10.0.0.7:5557').optional(),
    /** This engine's figures where they differ from routing.engineModel (another GPU, a bigger model). */
    perf: PerfSchema.optional(),
  })
  .strict();

const KeySchema = z.union([
  z.object({ principal: z.string().min(1), sha256: z.string().regex(hex64, 'hex SHA-256 of the key, lower case') }).strict(),
  z.object({ principal: z.string().min(1), env: z.string().min(1) }).strict(),
]);

const ModelSchema = z
  .object({
    name: z.string().min(1),
    /** Compute pools (engine label `pool`) the model may run in; absent means any engine serving it. */
    pools: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict();

const RoutingSchema = z
  .object({
    policy: z.enum(POLICY_NAMES as [PolicyName, ...PolicyName[]]).default('prefix-cache'),
    filters: z.array(z.string().min(1)).optional(),
    scorers: z.array(z.object({ name: z.string().min(1), weight: z.number().positive() }).strict()).optional(),
    picker: z.string().min(1).optional(),
    /**
     * How fast engines are believed to run before the gateway has calibrated them from their answers (an engine's
     * own `perf` overrides it): the prefix-cache policy predicts latency from it. Default: Llama-3.1-8B on an H100.
     */
    engineModel: PerfSchema.prefault({}).transform((p) => ({
      prefillTokensPerSec: p.prefillTokensPerSec ?? DEFAULT_ENGINE_PERF.prefillTokensPerSec,
      decodeBaseMs: p.decodeBaseMs ?? DEFAULT_ENGINE_PERF.decodeBaseMs,
      decodeMsPer1kKvTokens: p.decodeMsPer1kKvTokens ?? DEFAULT_ENGINE_PERF.decodeMsPer1kKvTokens,
    })),
  })
  .strict();

const ms = (dflt: number) => z.number().int().positive().default(dflt);

export const ConfigSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
        bodyLimitBytes: z.number().int().positive().default(4 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        /** Keys from config; keys from the database (admin API) are accepted too, config keys checked first. */
        keys: z.array(KeySchema).default([]),
        /** How long a database key lookup (hit or miss) is cached per replica; bounds how late a revocation bites elsewhere. */
        keyCacheTtlMs: ms(5_000),
        keyCacheMaxEntries: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
    database: z
      .object({
        /** Postgres holds the control plane when set; env DATABASE_URL overrides. Unset: embedded PGlite. */
        url: z.string().regex(/^postgres(ql)?:\/\//, 'a postgres:// or postgresql:// URL').optional(),
        /** PGlite data directory when no url is set; unset: in memory (lost at exit). */
        dataDir: z.string().min(1).optional(),
      })
      .strict()
      .prefault({}),
    admin: z
      .object({
        /** Env variable holding the admin key that guards /admin/; unset or empty there: /admin/ is not served. */
        keyEnv: z.string().min(1).default('SWITCHYARD_ADMIN_KEY'),
      })
      .strict()
      .prefault({}),
    engines: z.array(EngineSchema).default([]),
    models: z.array(ModelSchema).default([]),
    routing: RoutingSchema.prefault({}),
    retry: z
      .object({
        /** Attempts in all, the first included; each retry goes to an engine not tried yet. */
        maxAttempts: z.number().int().min(1).max(10).default(3),
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        /** From arrival to the first byte of the answer, queueing and retries included. */
        firstTokenMs: ms(60_000),
        /** Longest silence between two chunks of an answer. */
        idleMs: ms(60_000),
        /** Whole request. Longer than the others: a long generation is not a fault. */
        totalMs: ms(600_000),
      })
      .strict()
      .prefault({}),
    health: z
      .object({
        intervalMs: ms(5_000),
        timeoutMs: ms(2_000),
        /** Consecutive proxy failures that eject an engine until a probe succeeds again. */
        failureThreshold: z.number().int().min(1).default(3),
      })
      .strict()
      .prefault({}),
    scrape: z.object({ intervalMs: ms(1_000), timeoutMs: ms(1_000) }).strict().prefault({}),
    upstream: z
      .object({
        /** Keep-alive connections per engine. */
        connections: z.number().int().positive().default(256),
      })
      .strict()
      .prefault({}),
    kvcache: z
      .object({
        /** Compute each prompt's blocks and look them up in the index before routing. */
        enabled: z.boolean().default(true),
        tokenizer: z.enum(TOKENIZER_NAMES).default('approximate'),
        /**
         * approximate: the router's own fast hashes, fed by its routing decisions. vllm: the engines' own block
         * hashes (needs the engines' tokenizer and block size), so their KV events correct the index.
         */
        hashing: z.enum(['approximate', 'vllm']).default('approximate'),
        /** Tokens per block; default 64 (approximate) or vLLM's 16 (vllm). */
        blockSize: z.number().int().min(1).max(4096).optional(),
        /** Most (block, engine) entries in the index, all engines together. */
        maxEntries: z.number().int().positive().default(DEFAULT_MAX_ENTRIES),
        /** Approximate memory the index may use (router heap, or Redis); the tighter of this and maxEntries holds. */
        maxBytes: z.number().int().positive().optional(),
        /** Key prefix in Redis, so several fleets can share one Redis. */
        redisKeyPrefix: z.string().min(1).default('switchyard:kv:'),
      })
      .strict()
      .prefault({}),
    session: z
      .object({
        /** Request header carrying a session key. */
        header: z.string().min(1).default('x-session-id'),
        /** Also take the OpenAI `user` field as the session key when the header is absent. */
        userField: z.boolean().default(true),
        /** Sessions remembered per router replica, least recently used forgotten first. */
        maxSessions: z.number().int().positive().default(100_000),
        ttlMs: ms(30 * 60_000),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        /**
         * Redis unreachable: 'open' admits on per-replica local counters (logged and counted), 'closed' answers 503.
         * Either way the next request tries Redis again, so it recovers by itself.
         */
        failMode: z.enum(['open', 'closed']).default('open'),
        /** Completion tokens reserved when a request sets no max_tokens; corrected to the real count at the end. */
        defaultMaxTokens: z.number().int().positive().default(1024),
        /** Key prefix of the counters in Redis. */
        redisKeyPrefix: z.string().min(1).default('switchyard:rl:'),
        /** A Redis call slower than this counts as Redis being down (fail-open or fail-closed applies). */
        redisTimeoutMs: ms(250),
      })
      .strict()
      .prefault({}),
    queue: z
      .object({
        /** Hold requests in a fair queue while every engine that could serve them is saturated. */
        enabled: z.boolean().default(true),
        /** Requests waiting at most, all tenants together; beyond it, 429 at once. */
        maxQueued: z.number().int().positive().default(1_000),
        /** Longest wait in the queue (the request's time-to-first-token budget); then 429 queue_timeout. */
        maxWaitMs: ms(30_000),
        /** VTC cost of a prompt token and of a completion token (the paper's defaults: 1 and 2). */
        promptWeight: z.number().nonnegative().default(1),
        completionWeight: z.number().nonnegative().default(2),
        /** An engine is saturated when any of these is reached; unset: that signal is not used. */
        saturation: z
          .object({
            /** Requests this gateway has in flight on the engine. */
            maxInFlight: z.number().int().positive().optional(),
            /** Requests waiting in the engine's own queue (scraped). */
            maxWaiting: z.number().int().nonnegative().optional(),
            /** The engine's KV-cache usage, 0..1 (scraped). */
            maxKvUsage: z.number().positive().max(1).optional(),
          })
          .strict()
          .prefault({ maxInFlight: 256, maxWaiting: 32, maxKvUsage: 0.98 }),
      })
      .strict()
      .prefault({}),
    usage: z
      .object({
        /** Redis stream the usage events go through when Redis is configured. */
        streamKey: z.string().min(1).default('switchyard:usage'),
        /** Consumer group of the writers that move usage events from the stream into the database. */
        group: z.string().min(1).default('usage-writers'),
        /** Rows per database insert. */
        batchSize: z.number().int().positive().max(5_000).default(500),
        /** Longest a usage row waits in memory before its batch is written. */
        flushIntervalMs: ms(200),
        /** A stream entry read by a writer and not acknowledged for this long is taken over by another writer. */
        claimIdleMs: ms(30_000),
        /** Run a stream writer in this gateway (several gateways may: they share the consumer group). */
        writer: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    adapters: z
      .object({
        /** Run the placement controller in this gateway (with Redis, one gateway at a time acts: a lease). */
        controller: z.boolean().default(true),
        /** Adapters an engine holds at once, unless the engine says (vLLM --max-loras). */
        maxPerEngine: z.number().int().positive().default(4),
        /** Demand one replica of an adapter is meant to serve; more demand, more replicas. */
        requestsPerReplica: z.number().positive().default(60),
        /** Never unload an adapter that became resident less than this long ago (no flapping). */
        minResidencyMs: ms(60_000),
        /** Between controller rounds. */
        intervalMs: ms(2_000),
        /** The controller lease: a dead holder is replaced after this. */
        leaseTtlMs: ms(10_000),
        /** How stale a router's view of where adapters are resident may be. */
        residencyRefreshMs: ms(250),
        /** Key prefix in Redis. */
        redisKeyPrefix: z.string().min(1).default('switchyard:adapters:'),
      })
      .strict()
      .prefault({}),
    discovery: z
      .object({
        /** Engines registered by sidecars in Redis (`switchyard sidecar --register`), added to `engines`; needs redis.url. */
        registry: z
          .object({
            enabled: z.boolean().default(false),
            prefix: z.string().min(1).default('switchyard:registry:'),
            /** How often the registry is read: an engine whose heartbeat stopped is dropped within its TTL plus this. */
            intervalMs: ms(1_000),
          })
          .strict()
          .prefault({}),
        /** Engines from Kubernetes EndpointSlices (ready endpoints only), added to `engines`. */
        kubernetes: z
          .object({
            enabled: z.boolean().default(false),
            /** Unset: every namespace is watched (needs a ClusterRole). */
            namespace: z.string().min(1).optional(),
            labelSelector: z.string().min(1).default('switchyard.io/role=engine'),
            /** The engine port's name in the slice, or its number; default the slice's first port. */
            port: z.union([z.string().min(1), z.number().int().positive()]).optional(),
            /** Models and kind for slices that do not name theirs (annotation switchyard.io/models, label switchyard.io/engine-kind). */
            models: z.array(z.string().min(1)).optional(),
            kind: z.enum(['vllm', 'sglang', 'llamacpp']).default('vllm'),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    redis: z
      .object({
        /** Shared state (prefix index, rate limits, usage events, cache invalidation) lives here when set; env REDIS_URL overrides. Unset: in-process. */
        url: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL').optional(),
      })
      .strict()
      .prefault({}),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const ids = new Set<string>();
    cfg.engines.forEach((e, i) => {
      if (ids.has(e.id)) ctx.addIssue({ code: 'custom', path: ['engines', i, 'id'], message: `duplicate engine id "${e.id}"` });
      ids.add(e.id);
    });
    if (cfg.kvcache.hashing !== 'vllm') {
      cfg.engines.forEach((e, i) => {
        if (e.kvEventsEndpoint !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['engines', i, 'kvEventsEndpoint'], message: 'KV events name blocks by the engine\'s hashes: set kvcache.hashing: vllm' });
        }
      });
    }
    if (cfg.discovery.registry.enabled && cfg.redis.url === undefined) {
      ctx.addIssue({ code: 'custom', path: ['discovery', 'registry', 'enabled'], message: 'the engine registry lives in Redis: set redis.url (or env REDIS_URL)' });
    }
    if (cfg.adapters.leaseTtlMs <= cfg.adapters.intervalMs) {
      ctx.addIssue({ code: 'custom', path: ['adapters', 'leaseTtlMs'], message: 'must be longer than adapters.intervalMs, or the lease lapses between rounds' });
    }
    const names = new Set<string>();
    cfg.models.forEach((m, i) => {
      if (names.has(m.name)) ctx.addIssue({ code: 'custom', path: ['models', i, 'name'], message: `duplicate model "${m.name}"` });
      names.add(m.name);
    });
  });

export type Config = z.infer<typeof ConfigSchema>;
export type EngineConfig = Config['engines'][number];
export type KeyConfig = Config['auth']['keys'][number];
export type RoutingSettings = Config['routing'];

/** The block size in force: the configured one, else the hashing scheme's default. */
export function kvBlockSize(cfg: Config['kvcache']): number {
  return cfg.blockSize ?? (cfg.hashing === 'vllm' ? VLLM_DEFAULT_BLOCK_SIZE : DEFAULT_BLOCK_SIZE);
}

/** A config that cannot be used: names the field and says why, so start-up can exit with a useful line. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    super(`invalid config (${source}):\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** An environment variable that overrides one config field. */
export interface EnvOverride {
  readonly env: string;
  readonly path: readonly string[];
  readonly parse: (v: string) => unknown;
}

/** Environment variables that override config fields; documented in the README. */
const envOverrides: readonly EnvOverride[] = [
  { env: 'PORT', path: ['server', 'port'], parse: Number },
  { env: 'SWITCHYARD_HOST', path: ['server', 'host'], parse: String },
  { env: 'SWITCHYARD_LOG_LEVEL', path: ['log', 'level'], parse: String },
  { env: 'SWITCHYARD_ROUTING_POLICY', path: ['routing', 'policy'], parse: String },
  { env: 'REDIS_URL', path: ['redis', 'url'], parse: String },
  { env: 'DATABASE_URL', path: ['database', 'url'], parse: String },
];

export interface LoadOptions {
  /** YAML file to read; absent means defaults plus `base`. */
  path?: string;
  /** Settings under the file (the dev command supplies its simulated engines this way). */
  base?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  return loadYamlConfig(ConfigSchema, { ...opts, envOverrides });
}

export interface YamlConfigOptions extends LoadOptions {
  /** Environment variables applied over the file, before the schema check. */
  envOverrides?: readonly EnvOverride[];
}

/**
 * The loader's machinery for any schema: `base`, then the YAML file over it, then the environment overrides, then
 * one schema check. Every problem becomes a ConfigError naming the field (or the env variable that set it).
 */
export function loadYamlConfig<S extends z.ZodType>(schema: S, opts: YamlConfigOptions = {}): z.output<S> {
  const env = opts.env ?? process.env;
  const source = opts.path ?? 'built-in defaults';
  let fromFile: unknown = {};
  if (opts.path !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.path, 'utf8');
    } catch (err) {
      throw new ConfigError(source, [`cannot read file: ${(err as Error).message}`]);
    }
    try {
      fromFile = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError(source, [`not valid YAML: ${(err as Error).message}`]);
    }
    if (typeof fromFile !== 'object' || Array.isArray(fromFile)) throw new ConfigError(source, ['the top level must be a mapping']);
  }
  const raw = mergeDeep(opts.base ?? {}, fromFile as Record<string, unknown>);
  const fromEnv: string[] = [];
  for (const o of opts.envOverrides ?? []) {
    const value = env[o.env];
    if (value === undefined || value === '') continue;
    setPath(raw, o.path, o.parse(value));
    fromEnv.push(`${o.path.join('.')} (from env ${o.env})`);
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(
      source,
      result.error.issues.map((issue) => {
        const field = issue.path.length === 0 ? '(top level)' : formatPath(issue.path);
        const viaEnv = fromEnv.find((f) => f.startsWith(`${field} `));
        return `${viaEnv ?? field}: ${issue.message}`;
      }),
    );
  }
  return result.data;
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `over` on top of `base`: mappings merged key by key, anything else (arrays included) replaced. */
export function mergeDeep(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? mergeDeep(b, v) : v;
  }
  return out;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (!isPlainObject(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}
