import { DiscoveryV1Api, KubeConfig, ListWatch, Watch, type V1EndpointSlice } from '@kubernetes/client-node';
import type { EngineKind, EngineSpec } from '../engine.js';

/**
 * Engines discovered from Kubernetes EndpointSlices (discovery.k8s.io/v1): one engine per ready endpoint of the
 * slices that match a label selector, typically the slices of the engines' Service
 * (`kubernetes.io/service-name=vllm-llama`) or a label the Service carries (slices copy their Service's labels).
 *
 * Importing this module loads @kubernetes/client-node (about half a second); import it dynamically where
 * discovery is optional.
 *
 * Mapping of an endpoint to an EngineSpec:
 * - id: the pod name (targetRef of kind Pod), else the endpoint's hostname, else `<slice>-<address>`; prefixed
 *   with `<namespace>/` when watching all namespaces. An endpoint listed by two slices (a rollout moving it)
 *   counts once.
 * - url: `<scheme>://<first address>:<port>`, the port being the slice port named `port` (or with that number)
 *   when configured, else the slice's first port. Slices without that port are skipped.
 * - models: annotation, then label, `switchyard.io/models` on the slice (comma-separated), else `models` from
 *   the options. Label values cannot hold commas or slashes, so in practice models come from the options or
 *   the annotation. An endpoint with no model is skipped.
 * - kind: `switchyard.io/engine-kind` (annotation, then label), else `kind` from the options, else vllm.
 * - labels: `pool` from the slice label `switchyard.io/pool` (else the options' pool, else none), `zone` and
 *   `node` from the endpoint when set. kvCapacityTokens from `switchyard.io/kv-capacity-tokens` when set.
 * - Only endpoints whose `conditions.ready` is not false (Kubernetes: unset means ready) and whose address
 *   family is `addressType` (default IPv4) count; a terminating pod is not ready.
 */
export interface KubernetesDiscoveryOptions {
  /** Default KubeConfig.loadFromDefault() (in-cluster or ~/.kube/config). */
  readonly kubeConfig?: KubeConfig;
  /** Namespace to watch; undefined watches all namespaces (needs a ClusterRole). */
  readonly namespace?: string | undefined;
  /** e.g. `kubernetes.io/service-name=vllm` or `app.kubernetes.io/part-of=switchyard,switchyard.io/role=engine`. */
  readonly labelSelector: string;
  /** The engine's port: its name in the slice (the Service port's name) or number. Default the slice's first port. */
  readonly port?: string | number | undefined;
  readonly scheme?: 'http' | 'https';
  readonly addressType?: 'IPv4' | 'IPv6';
  /** Models for slices that do not name theirs. */
  readonly models?: readonly string[] | undefined;
  /** Engine kind for slices that do not name theirs. Default vllm. */
  readonly kind?: EngineKind | undefined;
  /** `pool` label for slices without a `switchyard.io/pool` label. */
  readonly pool?: string | undefined;
  /** The engine set after every change (and once at start). Must not throw. */
  readonly onChange: (specs: readonly EngineSpec[]) => void;
  /** A failed list or watch after start; discovery retries with backoff and keeps the last engines meanwhile. */
  readonly onError?: (err: Error) => void;
  /** First retry delay after an error, doubled up to 30 s. Default 1,000 ms. */
  readonly retryDelayMs?: number;
}

export interface KubernetesDiscovery {
  /** The engines as last reported to onChange. */
  specs(): readonly EngineSpec[];
  stop(): Promise<void>;
}

export const MODELS_KEY = 'switchyard.io/models';
export const ENGINE_KIND_KEY = 'switchyard.io/engine-kind';
export const POOL_LABEL = 'switchyard.io/pool';
export const KV_CAPACITY_KEY = 'switchyard.io/kv-capacity-tokens';

const MAX_RETRY_MS = 30_000;

/**
 * Lists the matching EndpointSlices, calls onChange with the engines they hold, then follows a watch and calls
 * onChange again whenever the engine set changes (not on every slice event: the events of one relist or of an
 * unrelated field are coalesced and compared first).
 *
 * Rejects when the first list fails (a 403 names the missing RBAC verbs); later failures go to onError and are
 * retried, the last known engines staying in place.
 */
export async function startKubernetesDiscovery(opts: KubernetesDiscoveryOptions): Promise<KubernetesDiscovery> {
  let kc = opts.kubeConfig;
  if (kc === undefined) {
    kc = new KubeConfig();
    kc.loadFromDefault();
  }
  const server = kc.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('kubernetes discovery: the kubeconfig has no current cluster (not in a pod, no ~/.kube/config or KUBECONFIG)');
  if (opts.labelSelector.trim() === '') throw new Error('kubernetes discovery: labelSelector must not be empty');
  const api = kc.makeApiClient(DiscoveryV1Api);
  const { namespace, labelSelector } = opts;
  const path = namespace === undefined ? '/apis/discovery.k8s.io/v1/endpointslices' : `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/endpointslices`;
  const list = () => (namespace === undefined ? api.listEndpointSliceForAllNamespaces({ labelSelector }) : api.listNamespacedEndpointSlice({ namespace, labelSelector }));
  const informer = new ListWatch<V1EndpointSlice>(path, new Watch(kc), list, false, labelSelector);
  const where = namespace === undefined ? 'all namespaces' : `namespace "${namespace}"`;

  let current: readonly EngineSpec[] = [];
  let currentKey = '';
  let started = false;
  let stopped = false;
  let scheduled = false;
  let firstError: Error | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryMs = opts.retryDelayMs ?? 1000;

  const emit = (): void => {
    const next = toEngineSpecs(informer.list(), opts);
    const key = JSON.stringify(next);
    if (key === currentKey) return;
    current = next;
    currentKey = key;
    opts.onChange(next);
  };
  const schedule = (): void => {
    if (!started || stopped || scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      if (!stopped) emit();
    });
  };

  const onEvent = (): void => {
    // Objects arriving again means the connection works: the next failure starts from the first delay.
    retryMs = opts.retryDelayMs ?? 1000;
    schedule();
  };
  informer.on('add', onEvent);
  informer.on('update', onEvent);
  informer.on('delete', onEvent);
  // The informer re-lists by itself after a 410 and reconnects after its inactivity timeout; any other error
  // ends its loop, so it is restarted here.
  informer.on('error', (err: unknown) => {
    const e = describeError(err, where, server);
    if (!started) {
      firstError ??= e;
      return;
    }
    if (stopped) return;
    opts.onError?.(e);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      if (stopped) return;
      void informer.start();
    }, retryMs);
    retryTimer.unref();
    retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
  });

  await informer.start();
  if (firstError !== undefined) {
    stopped = true;
    await informer.stop();
    throw firstError;
  }
  started = true;
  emit();

  return {
    specs: () => current,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(retryTimer);
      await informer.stop();
    },
  };
}

/** The engines of a set of EndpointSlices, sorted by id (pure; exported for tests and tools). */
export function toEngineSpecs(slices: readonly V1EndpointSlice[], opts: Pick<KubernetesDiscoveryOptions, 'namespace' | 'port' | 'scheme' | 'addressType' | 'models' | 'kind' | 'pool'>): EngineSpec[] {
  const addressType = opts.addressType ?? 'IPv4';
  const scheme = opts.scheme ?? 'http';
  const byId = new Map<string, EngineSpec>();
  // Deterministic when an endpoint appears in two slices: the slice with the smaller name wins.
  const sorted = [...slices].sort((a, b) => sliceKey(a).localeCompare(sliceKey(b)));
  for (const slice of sorted) {
    if (slice.addressType !== addressType) continue;
    const port = pickPort(slice, opts.port);
    if (port === undefined) continue;
    const meta = slice.metadata ?? {};
    const sliceLabels = meta.labels ?? {};
    const annotations = meta.annotations ?? {};
    const models = splitList(annotations[MODELS_KEY] ?? sliceLabels[MODELS_KEY]) ?? (opts.models === undefined ? [] : [...opts.models]);
    if (models.length === 0) continue;
    const kind = engineKind(annotations[ENGINE_KIND_KEY] ?? sliceLabels[ENGINE_KIND_KEY]) ?? opts.kind ?? 'vllm';
    const pool = sliceLabels[POOL_LABEL] ?? opts.pool;
    const capacity = Number(annotations[KV_CAPACITY_KEY] ?? sliceLabels[KV_CAPACITY_KEY]);
    for (const ep of slice.endpoints ?? []) {
      if (ep.conditions?.ready === false) continue;
      const address = ep.addresses?.[0];
      if (address === undefined || address === '') continue;
      const base = ep.targetRef?.kind === 'Pod' && ep.targetRef.name ? ep.targetRef.name : ep.hostname ? ep.hostname : `${meta.name ?? 'slice'}-${address.replace(/[:.]/g, '-')}`;
      const id = opts.namespace === undefined && meta.namespace ? `${meta.namespace}/${base}` : base;
      if (byId.has(id)) continue;
      const labels: Record<string, string> = {};
      if (pool !== undefined) labels.pool = pool;
      if (ep.zone) labels.zone = ep.zone;
      if (ep.nodeName) labels.node = ep.nodeName;
      const host = addressType === 'IPv6' ? `[${address}]` : address;
      byId.set(id, {
        id,
        url: `${scheme}://${host}:${port}`,
        kind,
        models,
        labels,
        ...(Number.isInteger(capacity) && capacity > 0 ? { kvCapacityTokens: capacity } : {}),
      });
    }
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function sliceKey(s: V1EndpointSlice): string {
  return `${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? ''}`;
}

function pickPort(slice: V1EndpointSlice, want: string | number | undefined): number | undefined {
  const ports = slice.ports ?? [];
  const p = want === undefined ? ports[0] : ports.find((q) => (typeof want === 'number' ? q.port === want : q.name === want));
  const n = p?.port;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : undefined;
}

function splitList(v: string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  const items = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return items.length === 0 ? undefined : items;
}

function engineKind(v: string | undefined): EngineKind | undefined {
  return v === 'vllm' || v === 'sglang' || v === 'llamacpp' ? v : undefined;
}

function describeError(err: unknown, where: string, server: string): Error {
  const status = statusOf(err);
  const message = err instanceof Error ? err.message : String(err);
  if (status === 403) {
    return new Error(
      `kubernetes discovery: 403 Forbidden listing/watching endpointslices in ${where}: RBAC verbs "list" and "watch" on resource "endpointslices" ` +
        `in API group "discovery.k8s.io" are needed (a Role${where === 'all namespaces' ? ', or a ClusterRole for all namespaces' : ''})`,
      { cause: err },
    );
  }
  if (status === 401) return new Error(`kubernetes discovery: 401 Unauthorized, the API server at ${server} rejected the credentials`, { cause: err });
  if (status !== undefined) return new Error(`kubernetes discovery: endpointslices in ${where}: HTTP ${status}: ${message.split('\n')[0]}`, { cause: err });
  const cause = err instanceof Error && err.cause instanceof Error ? ` (${err.cause.message})` : '';
  return new Error(`kubernetes discovery: cannot reach the API server at ${server}: ${message}${cause}`, { cause: err });
}

function statusOf(err: unknown): number | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.code === 'number') return e.code;
  return undefined;
}
