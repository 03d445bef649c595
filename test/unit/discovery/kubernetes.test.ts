import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EngineSpec } from '../../../core/engine.js';
import { startKubernetesDiscovery, toEngineSpecs, type KubernetesDiscovery } from '../../../core/discovery/kubernetes.js';
import { startFakeKubeApi, type EndpointSliceObject, type FakeKubeApi } from '../../helpers/fake-kube-api.js';

const selector = 'kubernetes.io/service-name=vllm';

function slice(name: string, endpoints: EndpointSliceObject['endpoints'], extra: Partial<EndpointSliceObject> & { labels?: Record<string, string>; annotations?: Record<string, string>; namespace?: string } = {}): EndpointSliceObject {
  const { labels, annotations, namespace, ...rest } = extra;
  return {
    metadata: {
      name,
      namespace: namespace ?? 'llm',
      labels: { 'kubernetes.io/service-name': 'vllm', ...labels },
      ...(annotations === undefined ? {} : { annotations }),
    },
    addressType: 'IPv4',
    ports: [
      { name: 'metrics', port: 9090, protocol: 'TCP' },
      { name: 'http', port: 8000, protocol: 'TCP' },
    ],
    endpoints,
    ...rest,
  };
}

function pod(name: string, ip: string, ready = true, extra: Partial<EndpointSliceObject['endpoints'][number]> = {}): EndpointSliceObject['endpoints'][number] {
  return { addresses: [ip], conditions: { ready, serving: ready, terminating: false }, targetRef: { kind: 'Pod', name, namespace: 'llm' }, ...extra };
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('kubernetes discovery (EndpointSlices)', () => {
  let api: FakeKubeApi;
  let discovery: KubernetesDiscovery | undefined;

  beforeEach(async () => {
    api = await startFakeKubeApi();
  });
  afterEach(async () => {
    await discovery?.stop();
    discovery = undefined;
    await api.close();
  });

  it('lists, then follows watch events: add, not ready, delete', async () => {
    api.applyEndpointSlice(
      slice('vllm-abc', [pod('vllm-0', '10.0.0.1', true, { zone: 'eu-1a', nodeName: 'gpu-node-1' }), pod('vllm-1', '10.0.0.2', false)], {
        labels: { 'switchyard.io/pool': 'h100', 'switchyard.io/engine-kind': 'sglang' },
        annotations: { 'switchyard.io/models': 'meta-llama/Llama-3.1-8B, qwen/Qwen3-8B', 'switchyard.io/kv-capacity-tokens': '500000' },
      }),
    );
    // Another service's slice: not selected.
    api.applyEndpointSlice({ ...slice('other-xyz', [pod('other-0', '10.0.9.9')]), metadata: { name: 'other-xyz', namespace: 'llm', labels: { 'kubernetes.io/service-name': 'other' } } });

    const changes: (readonly EngineSpec[])[] = [];
    discovery = await startKubernetesDiscovery({ kubeConfig: api.kubeConfig(), namespace: 'llm', labelSelector: selector, port: 'http', onChange: (s) => changes.push(s) });

    const first: EngineSpec = {
      id: 'vllm-0',
      url: 'http://10.0.0.1:8000',
      kind: 'sglang',
      models: ['meta-llama/Llama-3.1-8B', 'qwen/Qwen3-8B'],
      labels: { pool: 'h100', zone: 'eu-1a', node: 'gpu-node-1' },
      kvCapacityTokens: 500000,
    };
    expect(changes).toEqual([[first]]);
    expect(discovery.specs()).toEqual([first]);

    // The list, then a watch from its resourceVersion, both with the selector.
    const list = api.requests[0]!;
    expect(list.method).toBe('GET');
    expect(list.path).toBe('/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices');
    expect(list.query).toEqual({ labelSelector: selector });
    expect(list.authorization).toBe(`Bearer ${api.token}`);
    await until('the watch', () => api.watchCount() === 1);
    const watch = api.requests[1]!;
    expect(watch.path).toBe('/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices');
    expect(watch.query).toMatchObject({ watch: 'true', labelSelector: selector });
    expect(Number(watch.query.resourceVersion)).toBeGreaterThan(0);

    // vllm-1 becomes ready: added.
    api.applyEndpointSlice(
      slice('vllm-abc', [pod('vllm-0', '10.0.0.1', true, { zone: 'eu-1a', nodeName: 'gpu-node-1' }), pod('vllm-1', '10.0.0.2', true)], {
        labels: { 'switchyard.io/pool': 'h100', 'switchyard.io/engine-kind': 'sglang' },
        annotations: { 'switchyard.io/models': 'meta-llama/Llama-3.1-8B, qwen/Qwen3-8B', 'switchyard.io/kv-capacity-tokens': '500000' },
      }),
    );
    await until('vllm-1 to be added', () => changes.length === 2);
    expect(changes[1]!.map((s) => [s.id, s.url])).toEqual([
      ['vllm-0', 'http://10.0.0.1:8000'],
      ['vllm-1', 'http://10.0.0.2:8000'],
    ]);
    expect(changes[1]![1]).toMatchObject({ kind: 'sglang', labels: { pool: 'h100' }, models: ['meta-llama/Llama-3.1-8B', 'qwen/Qwen3-8B'] });

    // A second slice of the same service (more than 100 endpoints, or a rollout) adds its pods.
    api.applyEndpointSlice(slice('vllm-def', [pod('vllm-2', '10.0.0.3')], { annotations: { 'switchyard.io/models': 'meta-llama/Llama-3.1-8B' } }));
    await until('vllm-2 to be added', () => changes.length === 3);
    expect(changes[2]!.map((s) => s.id)).toEqual(['vllm-0', 'vllm-1', 'vllm-2']);
    expect(changes[2]![2]).toEqual({ id: 'vllm-2', url: 'http://10.0.0.3:8000', kind: 'vllm', models: ['meta-llama/Llama-3.1-8B'], labels: {} });

    // vllm-0 becomes not ready (terminating): removed.
    api.applyEndpointSlice(
      slice('vllm-abc', [{ ...pod('vllm-0', '10.0.0.1', false), conditions: { ready: false, serving: true, terminating: true } }, pod('vllm-1', '10.0.0.2', true)], {
        labels: { 'switchyard.io/pool': 'h100', 'switchyard.io/engine-kind': 'sglang' },
        annotations: { 'switchyard.io/models': 'meta-llama/Llama-3.1-8B, qwen/Qwen3-8B', 'switchyard.io/kv-capacity-tokens': '500000' },
      }),
    );
    await until('vllm-0 to be removed', () => changes.length === 4);
    expect(changes[3]!.map((s) => s.id)).toEqual(['vllm-1', 'vllm-2']);

    // A change that does not alter any engine (a label unrelated to the mapping) is not reported.
    api.applyEndpointSlice(slice('vllm-def', [pod('vllm-2', '10.0.0.3')], { labels: { unrelated: 'x' }, annotations: { 'switchyard.io/models': 'meta-llama/Llama-3.1-8B' } }));
    // The slice is deleted: its engines go.
    api.deleteEndpointSlice('llm', 'vllm-def');
    await until('vllm-def to be deleted', () => changes.length === 5);
    expect(changes[4]!.map((s) => s.id)).toEqual(['vllm-1']);
    // Slices of other services never showed up.
    expect(changes.flat().some((s) => s.id === 'other-0')).toBe(false);

    await discovery.stop();
    await until('the watch to close', () => api.watchCount() === 0);
    api.applyEndpointSlice(slice('vllm-ghi', [pod('vllm-9', '10.0.0.9')], { annotations: { 'switchyard.io/models': 'm' } }));
    await new Promise((r) => setTimeout(r, 100));
    expect(changes).toHaveLength(5);
  });

  it('resumes the watch from the last resourceVersion when the server ends it, missing no event', async () => {
    api.applyEndpointSlice(slice('vllm-abc', [pod('vllm-0', '10.0.0.1')]));
    const changes: (readonly EngineSpec[])[] = [];
    discovery = await startKubernetesDiscovery({ kubeConfig: api.kubeConfig(), namespace: 'llm', labelSelector: selector, models: ['m'], onChange: (s) => changes.push(s) });
    // No port configured: the slice's first port.
    expect(changes).toEqual([[{ id: 'vllm-0', url: 'http://10.0.0.1:9090', kind: 'vllm', models: ['m'], labels: {} }]]);
    await until('the watch', () => api.watchCount() === 1);
    api.endWatches();
    // While no watch is open, the slice changes; the next watch replays it from the resourceVersion.
    api.applyEndpointSlice(slice('vllm-abc', [pod('vllm-0', '10.0.0.1'), pod('vllm-1', '10.0.0.2')]));
    await until('the change after the reconnect', () => changes.length === 2, 10_000);
    expect(changes[1]!.map((s) => s.id)).toEqual(['vllm-0', 'vllm-1']);
    const watches = api.requests.filter((r) => r.query.watch === 'true');
    expect(watches.length).toBeGreaterThanOrEqual(2);
    expect(Number(watches[1]!.query.resourceVersion)).toBeGreaterThanOrEqual(Number(watches[0]!.query.resourceVersion));
    // Only one list: the reconnect did not re-list.
    expect(api.requests.filter((r) => r.query.watch === undefined)).toHaveLength(1);
  });

  it('rejects at start with the missing RBAC verbs on 403, and with a clear error when unauthorized', async () => {
    api.failNext({ pathPrefix: '/apis/discovery.k8s.io/' }, 403);
    await expect(startKubernetesDiscovery({ kubeConfig: api.kubeConfig(), namespace: 'llm', labelSelector: selector, onChange: () => {} })).rejects.toThrow(
      'RBAC verbs "list" and "watch" on resource "endpointslices" in API group "discovery.k8s.io" are needed',
    );
    await expect(startKubernetesDiscovery({ kubeConfig: api.kubeConfig({ token: 'nope' }), namespace: 'llm', labelSelector: selector, onChange: () => {} })).rejects.toThrow('401 Unauthorized');
    expect(api.watchCount()).toBe(0);
  });

  it('reports a failed watch to onError, keeps the engines, and recovers', async () => {
    api.applyEndpointSlice(slice('vllm-abc', [pod('vllm-0', '10.0.0.1')]));
    const changes: (readonly EngineSpec[])[] = [];
    const errors: Error[] = [];
    discovery = await startKubernetesDiscovery({
      kubeConfig: api.kubeConfig(),
      namespace: 'llm',
      labelSelector: selector,
      models: ['m'],
      port: 8000,
      retryDelayMs: 50,
      onChange: (s) => changes.push(s),
      onError: (e) => errors.push(e),
    });
    await until('the watch', () => api.watchCount() === 1);
    // The next (re)connection is refused once.
    api.failNext({ pathPrefix: '/apis/discovery.k8s.io/' }, 503);
    api.endWatches();
    await until('the error', () => errors.length === 1, 10_000);
    expect(errors[0]!.message).toContain('HTTP 503');
    expect(discovery.specs().map((s) => s.id)).toEqual(['vllm-0']);
    await until('the watch to be back', () => api.watchCount() === 1, 10_000);
    api.applyEndpointSlice(slice('vllm-abc', [pod('vllm-0', '10.0.0.1'), pod('vllm-1', '10.0.0.2')]));
    await until('the change', () => changes.length === 2, 5000);
    expect(changes[1]!.map((s) => s.url)).toEqual(['http://10.0.0.1:8000', 'http://10.0.0.2:8000']);
  });

  it('watches all namespaces when no namespace is given, ids prefixed with the namespace', async () => {
    api.applyEndpointSlice(slice('vllm-a', [pod('vllm-0', '10.0.0.1')], { namespace: 'team-a' }));
    api.applyEndpointSlice(slice('vllm-b', [pod('vllm-0', '10.0.1.1')], { namespace: 'team-b' }));
    const changes: (readonly EngineSpec[])[] = [];
    discovery = await startKubernetesDiscovery({ kubeConfig: api.kubeConfig(), labelSelector: selector, models: ['m'], port: 'http', pool: 'shared', onChange: (s) => changes.push(s) });
    expect(api.requests[0]!.path).toBe('/apis/discovery.k8s.io/v1/endpointslices');
    expect(changes[0]!.map((s) => [s.id, s.url, s.labels.pool])).toEqual([
      ['team-a/vllm-0', 'http://10.0.0.1:8000', 'shared'],
      ['team-b/vllm-0', 'http://10.0.1.1:8000', 'shared'],
    ]);
  });
});

describe('toEngineSpecs', () => {
  const base = { models: ['m'], namespace: 'llm' } as const;
  const asSlices = (s: EndpointSliceObject[]) => s as unknown as Parameters<typeof toEngineSpecs>[0];

  it('skips other address types, slices without the port, endpoints without a model or address; ready unset counts as ready', () => {
    const specs = toEngineSpecs(
      asSlices([
        slice('v4', [{ addresses: ['10.0.0.1'], targetRef: { kind: 'Pod', name: 'p1' } }, { addresses: [], targetRef: { kind: 'Pod', name: 'p2' } }]),
        { ...slice('v6', [pod('p1', 'fd00::1')]), addressType: 'IPv6' },
        { ...slice('noport', [pod('p3', '10.0.0.3')]), ports: [{ name: 'grpc', port: 9000 }] },
      ]),
      { ...base, port: 'http' },
    );
    expect(specs).toEqual([{ id: 'p1', url: 'http://10.0.0.1:8000', kind: 'vllm', models: ['m'], labels: {} }]);
    expect(toEngineSpecs(asSlices([slice('v4', [pod('p1', '10.0.0.1')])]), { namespace: 'llm' })).toEqual([]);
  });

  it('maps IPv6 addresses, hostname ids, and an endpoint listed twice once', () => {
    const specs = toEngineSpecs(
      asSlices([
        { ...slice('b-v6', [pod('p1', 'fd00::1')]), addressType: 'IPv6' },
        { ...slice('a-v6', [pod('p1', 'fd00::9'), { addresses: ['fd00::2'], hostname: 'engine-2' }]), addressType: 'IPv6' },
      ]),
      { ...base, addressType: 'IPv6', port: 8000, scheme: 'https' },
    );
    expect(specs.map((s) => [s.id, s.url])).toEqual([
      ['engine-2', 'https://[fd00::2]:8000'],
      ['p1', 'https://[fd00::9]:8000'],
    ]);
  });
});
