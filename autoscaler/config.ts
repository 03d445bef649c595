/**
 * The autoscaler's config file (`switchyard autoscaler --config autoscaler.yaml`), read by the same machinery as
 * the gateway's (core/config.ts loadYamlConfig: YAML, env overrides, one schema check, errors naming the field).
 *
 * ```yaml
 * server: { host: 0.0.0.0, port: 8081 }   # GET /metrics, GET /explain
 * intervalMs: 2000
 * targets:
 *   - name: llama
 *     metric: kv_cache_usage               # kv_cache_usage | waiting_requests | running_requests | promql
 *     targetValue: 0.6                     # per replica
 *     minReplicas: 1
 *     maxReplicas: 8
 *     algorithm: kpa                       # kpa | apa; options under kpa: / apa:
 *     source: { type: scrape, urls: [http://10.0.0.7:8000, http://10.0.0.8:8000] }
 *     actuator: { kind: kubernetes, namespace: inference, resource: Deployment, name: llama-vllm }
 * ```
 */

import { z } from 'zod';
import { loadYamlConfig, type EnvOverride, type LoadOptions } from '../core/config.js';
import { ActuatorConfigSchema } from './actuators/index.js';
import { resolveApaOptions } from './apa.js';
import { resolveKpaOptions } from './kpa.js';

const idPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const httpUrl = z.string().regex(/^https?:\/\/[^/\s]+(\/\S*)?$/, 'an http(s) URL');
const ms = (dflt: number) => z.number().int().positive().default(dflt);
const optMs = () => z.number().int().positive().optional();
const rate = () => z.number().gt(1, 'must be > 1').optional();

const KpaOptionsSchema = z
  .object({
    stableWindowMs: optMs(),
    /** Default 10 % of stableWindowMs. */
    panicWindowMs: optMs(),
    panicThreshold: z.number().gt(1, 'must be > 1 (2 means 200 %)').optional(),
    maxScaleUpRate: rate(),
    maxScaleDownRate: rate(),
    scaleDownDelayMs: z.number().int().nonnegative().optional(),
  })
  .strict();

const ApaOptionsSchema = z
  .object({
    windowMs: optMs(),
    upTolerance: z.number().nonnegative().optional(),
    downTolerance: z.number().nonnegative().lt(1).optional(),
    maxScaleUpRate: rate(),
    maxScaleDownRate: rate(),
    scaleDownDelayMs: z.number().int().nonnegative().optional(),
  })
  .strict();

const ScrapeSourceSchema = z
  .object({
    type: z.literal('scrape'),
    /**
     * One URL per engine (or its sidecar): base or /metrics URLs. Empty: the replicas the actuator lists (the local
     * actuator). Not a Kubernetes Service URL: it would read one random replica per tick and count it as the
     * whole fleet; for a Deployment whose pods come and go, use the Prometheus source.
     */
    urls: z.array(httpUrl).default([]),
    engineKind: z.enum(['auto', 'sidecar', 'vllm', 'sglang', 'llamacpp']).default('auto'),
    timeoutMs: ms(1_000),
  })
  .strict();

const PrometheusSourceSchema = z
  .object({
    type: z.literal('prometheus'),
    url: httpUrl,
    /** An instant-vector or scalar PromQL expression. */
    query: z.string().trim().min(1),
    /** sum: the values add up to the load of all replicas; avg: their mean is the per-replica value. */
    aggregate: z.enum(['sum', 'avg']).default('sum'),
    timeoutMs: ms(2_000),
  })
  .strict();

const TargetSchema = z
  .object({
    /** Names the target in metrics, /explain, and the actuator's calls. */
    name: z.string().regex(idPattern, 'letters, digits, ".", "_" or "-", starting with a letter or digit'),
    metric: z.enum(['kv_cache_usage', 'waiting_requests', 'running_requests', 'promql']),
    /** The per-replica value to hold: KV usage 0..1, or requests per replica, or the PromQL value per replica. */
    targetValue: z.number().positive(),
    minReplicas: z.number().int().min(1, 'at least 1: a target at zero replicas reports no metric to scale up on').default(1),
    maxReplicas: z.number().int().min(1),
    algorithm: z.enum(['kpa', 'apa']).default('kpa'),
    kpa: KpaOptionsSchema.optional(),
    apa: ApaOptionsSchema.optional(),
    source: z.discriminatedUnion('type', [ScrapeSourceSchema, PrometheusSourceSchema]),
    actuator: ActuatorConfigSchema,
  })
  .strict()
  .superRefine((t, ctx) => {
    if (t.minReplicas > t.maxReplicas) ctx.addIssue({ code: 'custom', path: ['minReplicas'], message: `must be <= maxReplicas (${t.maxReplicas})` });
    if (t.metric === 'promql' && t.source.type !== 'prometheus') {
      ctx.addIssue({ code: 'custom', path: ['source', 'type'], message: 'metric promql needs source type prometheus (with a query)' });
    }
    if (t.metric === 'kv_cache_usage' && t.targetValue > 1) {
      ctx.addIssue({ code: 'custom', path: ['targetValue'], message: 'KV-cache usage is a 0..1 fraction: the target must be <= 1' });
    }
    if (t.algorithm === 'kpa' && t.apa !== undefined) ctx.addIssue({ code: 'custom', path: ['apa'], message: 'apa options on a kpa target: set algorithm: apa, or use kpa:' });
    if (t.algorithm === 'apa' && t.kpa !== undefined) ctx.addIssue({ code: 'custom', path: ['kpa'], message: 'kpa options on an apa target: set algorithm: kpa, or use apa:' });
    try {
      if (t.algorithm === 'kpa') resolveKpaOptions(t.kpa);
      else resolveApaOptions(t.apa);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: [t.algorithm], message: (err as Error).message });
    }
  });

export const AutoscalerConfigSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8081),
      })
      .strict()
      .prefault({}),
    /** Between ticks (Knative's tick: 2 s). */
    intervalMs: ms(2_000),
    /** Decisions kept per target for /explain. */
    decisionHistory: z.number().int().positive().max(10_000).default(100),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .prefault({}),
    targets: z.array(TargetSchema).min(1, 'list at least one scaling target'),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const names = new Set<string>();
    cfg.targets.forEach((t, i) => {
      if (names.has(t.name)) ctx.addIssue({ code: 'custom', path: ['targets', i, 'name'], message: `duplicate target "${t.name}"` });
      names.add(t.name);
    });
  });

export type AutoscalerConfig = z.output<typeof AutoscalerConfigSchema>;
export type TargetConfig = AutoscalerConfig['targets'][number];
export type SourceConfig = TargetConfig['source'];

const envOverrides: readonly EnvOverride[] = [
  { env: 'PORT', path: ['server', 'port'], parse: Number },
  { env: 'SWITCHYARD_HOST', path: ['server', 'host'], parse: String },
  { env: 'SWITCHYARD_LOG_LEVEL', path: ['log', 'level'], parse: String },
];

/** Reads and checks the autoscaler's config; throws ConfigError naming every bad field. */
export function loadAutoscalerConfig(opts: LoadOptions = {}): AutoscalerConfig {
  return loadYamlConfig(AutoscalerConfigSchema, { ...opts, envOverrides });
}
