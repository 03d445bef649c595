import { ApiException, AppsV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Scale } from '@kubernetes/client-node';
import type { Actuator } from '../actuator.js';

export type ScalableKind = 'Deployment' | 'StatefulSet';

export interface KubernetesActuatorOptions {
  /** Where the API server is and how to authenticate; default KubeConfig.loadFromDefault() (in-cluster or ~/.kube/config). */
  readonly kubeConfig?: KubeConfig;
  readonly namespace: string;
  readonly kind: ScalableKind;
  /** The Deployment's or StatefulSet's name. */
  readonly name: string;
  /** metadata.managedFields manager recorded on each change. Default "switchyard-autoscaler". */
  readonly fieldManager?: string;
}

/** What went wrong talking to the API server, with the HTTP status when there was one. */
export class KubernetesActuatorError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KubernetesActuatorError';
  }
}

/**
 * Acts through the scale subresource of one Deployment or StatefulSet (apps/v1 .../<name>/scale): reads
 * spec.replicas and sets it with a JSON merge patch `{"spec":{"replicas":N}}`, which needs no resourceVersion and
 * so cannot conflict with the controller updating status.
 *
 * The `target` argument of currentReplicas/scale is the autoscaler's name for the scaling target; this actuator
 * drives one object, so every target maps to it (the name only appears in error messages).
 *
 * RBAC the service account needs on the object: `get` and `patch` on `deployments/scale` (or
 * `statefulsets/scale`) in API group `apps`.
 */
export function kubernetesActuator(opts: KubernetesActuatorOptions): Actuator {
  if (opts.namespace === '' || opts.name === '') throw new Error('kubernetes actuator: namespace and name must not be empty');
  if (opts.kind !== 'Deployment' && opts.kind !== 'StatefulSet') throw new Error(`kubernetes actuator: kind must be Deployment or StatefulSet, got ${String(opts.kind)}`);
  let kc = opts.kubeConfig;
  if (kc === undefined) {
    kc = new KubeConfig();
    kc.loadFromDefault();
  }
  const server = kc.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('kubernetes actuator: the kubeconfig has no current cluster (not in a pod, no ~/.kube/config or KUBECONFIG)');
  const api = kc.makeApiClient(AppsV1Api);
  const { namespace, name, kind } = opts;
  const fieldManager = opts.fieldManager ?? 'switchyard-autoscaler';
  const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  let closed = false;

  const call = async <T>(verb: 'get' | 'patch', target: string, fn: () => Promise<T>): Promise<T> => {
    if (closed) throw new Error('kubernetes actuator: closed');
    try {
      return await fn();
    } catch (err) {
      throw describeError(err, { verb, target, kind, namespace, name, server });
    }
  };

  return {
    kind: 'kubernetes',

    async currentReplicas(target: string): Promise<number> {
      const scale: V1Scale =
        kind === 'Deployment'
          ? await call('get', target, () => api.readNamespacedDeploymentScale({ name, namespace }))
          : await call('get', target, () => api.readNamespacedStatefulSetScale({ name, namespace }));
      return scale.spec?.replicas ?? 0;
    },

    async scale(target: string, replicas: number): Promise<void> {
      if (!Number.isInteger(replicas) || replicas < 0) throw new RangeError(`kubernetes actuator: replicas must be a non-negative integer, got ${replicas}`);
      const body = { spec: { replicas } };
      if (kind === 'Deployment') {
        await call('patch', target, () => api.patchNamespacedDeploymentScale({ name, namespace, body, fieldManager }, mergePatch));
      } else {
        await call('patch', target, () => api.patchNamespacedStatefulSetScale({ name, namespace, body, fieldManager }, mergePatch));
      }
    },

    async close(): Promise<void> {
      closed = true;
    },
  };
}

interface ErrorContext {
  verb: 'get' | 'patch';
  target: string;
  kind: ScalableKind;
  namespace: string;
  name: string;
  server: string;
}

function describeError(err: unknown, c: ErrorContext): KubernetesActuatorError {
  const resource = c.kind === 'Deployment' ? 'deployments' : 'statefulsets';
  const what = `${c.verb === 'get' ? 'reading' : 'patching'} ${c.kind} ${c.namespace}/${c.name} scale (target "${c.target}")`;
  if (err instanceof ApiException) {
    const status = err.code;
    const detail = statusMessage(err.body);
    const suffix = detail === undefined ? '' : `: ${detail}`;
    switch (status) {
      case 401:
        return new KubernetesActuatorError(`kubernetes actuator: ${what}: 401 Unauthorized, the API server at ${c.server} rejected the credentials${suffix}`, status, { cause: err });
      case 403:
        return new KubernetesActuatorError(
          `kubernetes actuator: ${what}: 403 Forbidden, RBAC verb "${c.verb}" on resource "${resource}/scale" in API group "apps" is missing ` +
            `in namespace "${c.namespace}" (grant it to the service account through a Role)${suffix}`,
          status,
          { cause: err },
        );
      case 404:
        return new KubernetesActuatorError(`kubernetes actuator: ${what}: 404, ${c.kind} "${c.name}" not found in namespace "${c.namespace}"${suffix}`, status, { cause: err });
      default:
        return new KubernetesActuatorError(`kubernetes actuator: ${what}: HTTP ${status}${suffix}`, status, { cause: err });
    }
  }
  const message = err instanceof Error ? (err.cause instanceof Error ? `${err.message} (${err.cause.message})` : err.message) : String(err);
  return new KubernetesActuatorError(`kubernetes actuator: ${what}: cannot reach the API server at ${c.server}: ${message}`, undefined, { cause: err });
}

/** The `message` of a Kubernetes Status body (JSON text or already parsed), when there is one. */
function statusMessage(body: unknown): string | undefined {
  let v = body;
  if (typeof body === 'string') {
    try {
      v = JSON.parse(body);
    } catch {
      return body.trim() === '' ? undefined : body.slice(0, 300);
    }
  }
  if (v !== null && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') return (v as { message: string }).message;
  return undefined;
}
