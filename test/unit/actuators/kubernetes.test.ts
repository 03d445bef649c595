import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KubernetesActuatorError, kubernetesActuator } from '../../../autoscaler/actuators/kubernetes.js';
import { startFakeKubeApi, type FakeKubeApi } from '../../helpers/fake-kube-api.js';

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<KubernetesActuatorError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(KubernetesActuatorError);
    return err as KubernetesActuatorError;
  }
  throw new Error('expected a rejection');
}

describe('kubernetes actuator', () => {
  let api: FakeKubeApi;

  beforeEach(async () => {
    api = await startFakeKubeApi();
    api.setScale('deployments', 'llm', 'vllm-llama', 3);
    api.setScale('statefulsets', 'llm', 'vllm-big', 2);
  });
  afterEach(async () => {
    await api.close();
  });

  it('reads and patches the scale subresource of a Deployment', async () => {
    const act = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'Deployment', name: 'vllm-llama' });
    expect(act.kind).toBe('kubernetes');
    expect(await act.currentReplicas('llama-pool')).toBe(3);
    await act.scale('llama-pool', 5);
    expect(api.scaleOf('deployments', 'llm', 'vllm-llama')).toBe(5);
    expect(await act.currentReplicas('llama-pool')).toBe(5);
    await act.close();

    expect(api.requests.map((r) => ({ method: r.method, path: r.path, query: r.query, contentType: r.contentType, body: r.body, authorization: r.authorization }))).toEqual([
      { method: 'GET', path: '/apis/apps/v1/namespaces/llm/deployments/vllm-llama/scale', query: {}, contentType: undefined, body: undefined, authorization: `Bearer ${api.token}` },
      {
        method: 'PATCH',
        path: '/apis/apps/v1/namespaces/llm/deployments/vllm-llama/scale',
        query: { fieldManager: 'switchyard-autoscaler' },
        contentType: 'application/merge-patch+json',
        body: { spec: { replicas: 5 } },
        authorization: `Bearer ${api.token}`,
      },
      { method: 'GET', path: '/apis/apps/v1/namespaces/llm/deployments/vllm-llama/scale', query: {}, contentType: undefined, body: undefined, authorization: `Bearer ${api.token}` },
    ]);
    expect(api.requests[1]!.rawBody).toBe('{"spec":{"replicas":5}}');
  });

  it('acts on a StatefulSet through statefulsets/{name}/scale, including scaling to zero', async () => {
    const act = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'StatefulSet', name: 'vllm-big' });
    expect(await act.currentReplicas('big')).toBe(2);
    await act.scale('big', 0);
    expect(api.scaleOf('statefulsets', 'llm', 'vllm-big')).toBe(0);
    expect(await act.currentReplicas('big')).toBe(0);
    expect(api.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'GET /apis/apps/v1/namespaces/llm/statefulsets/vllm-big/scale',
      'PATCH /apis/apps/v1/namespaces/llm/statefulsets/vllm-big/scale',
      'GET /apis/apps/v1/namespaces/llm/statefulsets/vllm-big/scale',
    ]);
    expect(api.requests[1]!.body).toEqual({ spec: { replicas: 0 } });
    expect(api.requests[1]!.contentType).toBe('application/merge-patch+json');
    // The Deployment of the same name space was not touched.
    expect(api.scaleOf('deployments', 'llm', 'vllm-llama')).toBe(3);
  });

  it('names the missing RBAC verb on 403', async () => {
    const act = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'Deployment', name: 'vllm-llama' });
    api.failNext({ method: 'PATCH' }, 403);
    const err = await act.scale('llama-pool', 4).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubernetesActuatorError);
    expect((err as KubernetesActuatorError).status).toBe(403);
    expect((err as Error).message).toContain('RBAC verb "patch" on resource "deployments/scale" in API group "apps" is missing in namespace "llm"');
    expect((err as Error).message).toContain('target "llama-pool"');
    // The server's own message is kept.
    expect((err as Error).message).toContain('cannot patch');
    expect(api.scaleOf('deployments', 'llm', 'vllm-llama')).toBe(3);

    const sts = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'StatefulSet', name: 'vllm-big' });
    api.failNext({ method: 'GET' }, 403);
    await expect(sts.currentReplicas('big')).rejects.toThrow('RBAC verb "get" on resource "statefulsets/scale"');
  });

  it('maps 404, 401, other statuses and an unreachable server to clear errors', async () => {
    const missing = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'Deployment', name: 'nope' });
    await expect(missing.currentReplicas('x')).rejects.toThrow('Deployment "nope" not found in namespace "llm"');

    const badToken = kubernetesActuator({ kubeConfig: api.kubeConfig({ token: 'wrong' }), namespace: 'llm', kind: 'Deployment', name: 'vllm-llama' });
    const unauthorized = await rejection(badToken.currentReplicas('x'));
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.message).toContain(`401 Unauthorized, the API server at ${api.url} rejected the credentials`);

    const act = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'Deployment', name: 'vllm-llama' });
    api.failNext({ method: 'PATCH' }, 500);
    const failed = await rejection(act.scale('x', 2));
    expect(failed.status).toBe(500);
    expect(failed.message).toMatch(/patching Deployment llm\/vllm-llama scale .*HTTP 500/);

    const url = api.url;
    const kc = api.kubeConfig();
    await api.close();
    const gone = kubernetesActuator({ kubeConfig: kc, namespace: 'llm', kind: 'Deployment', name: 'vllm-llama' });
    const unreachable = await rejection(gone.currentReplicas('x'));
    expect(unreachable.status).toBeUndefined();
    expect(unreachable.message).toContain(`cannot reach the API server at ${url}`);
    api = await startFakeKubeApi(); // for afterEach
  });

  it('rejects a replica count that is not a non-negative integer without calling the API', async () => {
    const act = kubernetesActuator({ kubeConfig: api.kubeConfig(), namespace: 'llm', kind: 'Deployment', name: 'vllm-llama' });
    await expect(act.scale('x', -1)).rejects.toThrow(RangeError);
    await expect(act.scale('x', 1.5)).rejects.toThrow(RangeError);
    expect(api.requests).toEqual([]);
    await act.close();
    await expect(act.currentReplicas('x')).rejects.toThrow('closed');
  });
});
