import { podSpecOf, CLUSTER_SCOPED } from './kustomize.js';
import type {
  Container,
  K8sObject,
  LabelSelector,
  PodSpec,
  PodTemplate,
  PolicyRule,
  Probe,
  RoleRef,
  ServiceSpec,
  Subject,
  WorkloadSpec,
} from './k8s-types.js';

/**
 * Checks that a built set of Kubernetes objects holds together: what one object names, another provides. Each
 * check returns the problems it found as sentences (empty when all is well), so a test can show them all at once
 * and the unit tests can feed each check a small broken input.
 */

export type Problems = string[];

const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet']);

const EXPECTED_API_VERSION: Record<string, string> = {
  Namespace: 'v1',
  ConfigMap: 'v1',
  Secret: 'v1',
  Service: 'v1',
  ServiceAccount: 'v1',
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  DaemonSet: 'apps/v1',
  Role: 'rbac.authorization.k8s.io/v1',
  RoleBinding: 'rbac.authorization.k8s.io/v1',
  ClusterRole: 'rbac.authorization.k8s.io/v1',
  ClusterRoleBinding: 'rbac.authorization.k8s.io/v1',
  PodDisruptionBudget: 'policy/v1',
};

export function id(o: K8sObject): string {
  return `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

function find(objects: readonly K8sObject[], kind: string, namespace: string | undefined, name: string | undefined): K8sObject | undefined {
  return objects.find((o) => o.kind === kind && o.metadata.name === name && (CLUSTER_SCOPED.has(kind) || o.metadata.namespace === namespace));
}

export interface Workload {
  readonly object: K8sObject;
  readonly template: PodTemplate;
  readonly pod: PodSpec;
  readonly labels: Record<string, string>;
}

export function workloads(objects: readonly K8sObject[]): Workload[] {
  return objects
    .filter((o) => WORKLOAD_KINDS.has(o.kind))
    .map((o) => {
      const template = (o.spec as WorkloadSpec | undefined)?.template ?? {};
      return { object: o, template, pod: podSpecOf(o) ?? {}, labels: template.metadata?.labels ?? {} };
    });
}

export function containersOf(pod: PodSpec): Container[] {
  return [...(pod.initContainers ?? []), ...(pod.containers ?? [])];
}

// ---- names and labels ------------------------------------------------------------------------------------------

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A label key and value as the API server accepts them (empty when valid). */
export function labelProblems(key: string, value: unknown): Problems {
  const out: Problems = [];
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) out.push(`label key "${key}": bad prefix`);
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) out.push(`label key "${key}": bad name`);
  if (typeof value !== 'string') out.push(`label "${key}": value must be a string, got ${JSON.stringify(value)}`);
  else if (value !== '' && (value.length > 63 || !LABEL_NAME.test(value))) out.push(`label "${key}": bad value "${value}"`);
  return out;
}

/** apiVersion, names, namespaces and labels of every object. */
export function checkObjects(objects: readonly K8sObject[]): Problems {
  const out: Problems = [];
  const namespaces = new Set(objects.filter((o) => o.kind === 'Namespace').map((o) => o.metadata.name));
  for (const o of objects) {
    const expected = EXPECTED_API_VERSION[o.kind];
    if (expected !== undefined && o.apiVersion !== expected) out.push(`${id(o)}: apiVersion ${o.apiVersion}, expected ${expected}`);
    if (o.metadata.name.length > 253 || !DNS_SUBDOMAIN.test(o.metadata.name)) out.push(`${id(o)}: bad name`);
    if (!CLUSTER_SCOPED.has(o.kind)) {
      if (o.metadata.namespace === undefined) out.push(`${id(o)}: no namespace`);
      else if (!namespaces.has(o.metadata.namespace)) out.push(`${id(o)}: namespace ${o.metadata.namespace} is not created by these manifests`);
    }
    for (const [k, v] of Object.entries(o.metadata.labels ?? {})) out.push(...labelProblems(k, v).map((p) => `${id(o)}: ${p}`));
  }
  for (const w of workloads(objects)) {
    for (const [k, v] of Object.entries(w.labels)) out.push(...labelProblems(k, v).map((p) => `${id(w.object)} pod template: ${p}`));
  }
  return out;
}

// ---- selectors -------------------------------------------------------------------------------------------------

export function selectorMatches(selector: LabelSelector | Record<string, string> | undefined, labels: Record<string, string>): boolean {
  if (selector === undefined) return false;
  const isLabelSelector = 'matchLabels' in selector || 'matchExpressions' in selector;
  const matchLabels = isLabelSelector ? ((selector as LabelSelector).matchLabels ?? {}) : (selector as Record<string, string>);
  const expressions = isLabelSelector ? ((selector as LabelSelector).matchExpressions ?? []) : [];
  if (Object.keys(matchLabels).length === 0 && expressions.length === 0) return false;
  if (!Object.entries(matchLabels).every(([k, v]) => labels[k] === v)) return false;
  return expressions.every((e) => {
    const has = e.key in labels;
    switch (e.operator) {
      case 'In':
        return has && (e.values ?? []).includes(labels[e.key]!);
      case 'NotIn':
        return !has || !(e.values ?? []).includes(labels[e.key]!);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
      default:
        return false;
    }
  });
}

/** Workloads (same namespace) whose pod template a selector selects. */
export function selectedWorkloads(objects: readonly K8sObject[], namespace: string | undefined, selector: LabelSelector | Record<string, string> | undefined): Workload[] {
  return workloads(objects).filter((w) => w.object.metadata.namespace === namespace && selectorMatches(selector, w.labels));
}

/** A container port by name or number, in the given containers. */
function hasPort(containers: readonly Container[], port: string | number): boolean {
  return containers.some((c) => (c.ports ?? []).some((p) => (typeof port === 'number' ? p.containerPort === port : p.name === port)));
}

/**
 * Workloads select their own pods; Services and PodDisruptionBudgets select some workload's pods, and each
 * Service port's target port exists on every workload it selects.
 */
export function checkSelectors(objects: readonly K8sObject[]): Problems {
  const out: Problems = [];
  for (const w of workloads(objects)) {
    const selector = (w.object.spec as WorkloadSpec | undefined)?.selector;
    if (!selectorMatches(selector, w.labels)) out.push(`${id(w.object)}: spec.selector does not match its own pod template labels`);
  }
  for (const svc of objects.filter((o) => o.kind === 'Service')) {
    const spec = (svc.spec ?? {}) as ServiceSpec;
    if (spec.selector === undefined || Object.keys(spec.selector).length === 0) {
      out.push(`${id(svc)}: no selector`);
      continue;
    }
    const selected = selectedWorkloads(objects, svc.metadata.namespace, spec.selector);
    if (selected.length === 0) {
      out.push(`${id(svc)}: selector ${JSON.stringify(spec.selector)} matches no workload's pods`);
      continue;
    }
    const ports = spec.ports ?? [];
    if (ports.length === 0) out.push(`${id(svc)}: no ports`);
    if (ports.length > 1 && ports.some((p) => p.name === undefined)) out.push(`${id(svc)}: a Service with several ports must name each`);
    const names = ports.map((p) => p.name).filter((n) => n !== undefined);
    if (new Set(names).size !== names.length) out.push(`${id(svc)}: duplicate port names`);
    for (const p of ports) {
      const target = p.targetPort ?? p.port;
      if (target === undefined) {
        out.push(`${id(svc)}: a port without a port number`);
        continue;
      }
      for (const w of selected) {
        if (!hasPort(w.pod.containers ?? [], target)) out.push(`${id(svc)}: targetPort ${target} is not a container port of ${id(w.object)}`);
      }
    }
  }
  for (const pdb of objects.filter((o) => o.kind === 'PodDisruptionBudget')) {
    const selector = (pdb.spec as { selector?: LabelSelector } | undefined)?.selector;
    if (selectedWorkloads(objects, pdb.metadata.namespace, selector).length === 0) out.push(`${id(pdb)}: selector matches no workload's pods`);
  }
  return out;
}

// ---- pods: ports, probes, resources, images ----------------------------------------------------------------------

function probePort(probe: Probe): string | number | undefined {
  return probe.httpGet?.port ?? probe.tcpSocket?.port ?? probe.grpc?.port;
}

function quantityIsSet(v: unknown): boolean {
  return (typeof v === 'string' && v.length > 0) || (typeof v === 'number' && v > 0);
}

const STANDARD_RESOURCES = new Set(['cpu', 'memory', 'ephemeral-storage']);

/**
 * Per container: port names valid and unique in the pod, probes on one of the container's own ports, cpu and
 * memory requests, extended resources (GPUs) with equal requests and limits, images pinned to a tag or digest,
 * mounts of declared volumes; per pod, prometheus.io/port naming a port of the pod.
 */
export function checkPods(objects: readonly K8sObject[]): Problems {
  const out: Problems = [];
  for (const w of workloads(objects)) {
    const where = id(w.object);
    const containers = containersOf(w.pod);
    if ((w.pod.containers ?? []).length === 0) out.push(`${where}: no containers`);
    const containerNames = containers.map((c) => c.name);
    if (new Set(containerNames).size !== containerNames.length) out.push(`${where}: duplicate container names`);
    const portNames = containers.flatMap((c) => (c.ports ?? []).map((p) => p.name).filter((n): n is string => n !== undefined));
    if (new Set(portNames).size !== portNames.length) out.push(`${where}: duplicate container port names`);
    for (const n of portNames) {
      if (n.length > 15 || !PORT_NAME.test(n) || !/[a-z]/.test(n)) out.push(`${where}: bad port name "${n}" (lower case, digits and "-", at most 15)`);
    }
    const volumes = new Set((w.pod.volumes ?? []).map((v) => v.name));
    for (const c of containers) {
      const at = `${where} container ${c.name}`;
      for (const [kind, probe] of [
        ['readinessProbe', c.readinessProbe],
        ['livenessProbe', c.livenessProbe],
        ['startupProbe', c.startupProbe],
      ] as const) {
        if (probe === undefined || probe.exec !== undefined) continue;
        const port = probePort(probe);
        if (port === undefined) out.push(`${at}: ${kind} has no port`);
        else if (!hasPort([c], port)) out.push(`${at}: ${kind} port ${port} is not one of the container's ports`);
      }
      const requests = c.resources?.requests ?? {};
      const limits = c.resources?.limits ?? {};
      for (const r of ['cpu', 'memory']) {
        if (!quantityIsSet(requests[r])) out.push(`${at}: no ${r} request`);
      }
      for (const r of new Set([...Object.keys(requests), ...Object.keys(limits)])) {
        if (STANDARD_RESOURCES.has(r) || r.startsWith('hugepages-')) continue;
        if (limits[r] === undefined) out.push(`${at}: extended resource ${r} needs a limit`);
        else if (requests[r] !== undefined && String(requests[r]) !== String(limits[r])) out.push(`${at}: ${r} request and limit differ`);
      }
      if (c.image === undefined) out.push(`${at}: no image`);
      else {
        const tag = /:([^/:@]+)$/.exec(c.image.split('@')[0]!)?.[1];
        if (!c.image.includes('@') && (tag === undefined || tag === 'latest')) out.push(`${at}: image ${c.image} is not pinned to a tag`);
      }
      for (const m of c.volumeMounts ?? []) {
        if (!volumes.has(m.name)) out.push(`${at}: mounts volume ${m.name}, which the pod does not declare`);
      }
    }
    const annotations = w.template.metadata?.annotations ?? {};
    if (annotations['prometheus.io/scrape'] === 'true') {
      const port = Number(annotations['prometheus.io/port']);
      if (!Number.isInteger(port) || !hasPort(containers, port)) out.push(`${where}: prometheus.io/port ${annotations['prometheus.io/port']} is not a container port`);
    }
  }
  return out;
}

// ---- references: ConfigMaps, Secrets, ServiceAccounts -------------------------------------------------------------

function keysOf(o: K8sObject): Set<string> {
  return new Set([...Object.keys(o.data ?? {}), ...Object.keys(o.stringData ?? {}), ...Object.keys((o.binaryData as Record<string, string> | undefined) ?? {})]);
}

/** Every ConfigMap, Secret (and key of one) and ServiceAccount a pod names exists, unless marked optional. */
export function checkReferences(objects: readonly K8sObject[]): Problems {
  const out: Problems = [];
  for (const w of workloads(objects)) {
    const ns = w.object.metadata.namespace;
    const where = id(w.object);
    const ref = (kind: 'ConfigMap' | 'Secret', name: string | undefined, key: string | undefined, optional: boolean | undefined, at: string) => {
      if (name === undefined) {
        out.push(`${at}: a ${kind} reference without a name`);
        return;
      }
      const target = find(objects, kind, ns, name);
      if (target === undefined) {
        if (optional !== true) out.push(`${at}: ${kind} ${name} does not exist`);
        return;
      }
      if (key !== undefined && !keysOf(target).has(key) && optional !== true) out.push(`${at}: ${kind} ${name} has no key ${key}`);
    };
    const sa = w.pod.serviceAccountName;
    if (sa !== undefined && sa !== 'default' && find(objects, 'ServiceAccount', ns, sa) === undefined) out.push(`${where}: ServiceAccount ${sa} does not exist`);
    for (const c of containersOf(w.pod)) {
      const at = `${where} container ${c.name}`;
      for (const e of c.env ?? []) {
        const s = e.valueFrom?.secretKeyRef;
        if (s !== undefined) ref('Secret', s.name, s.key ?? '', s.optional, `${at} env ${e.name}`);
        const m = e.valueFrom?.configMapKeyRef;
        if (m !== undefined) ref('ConfigMap', m.name, m.key ?? '', m.optional, `${at} env ${e.name}`);
      }
      for (const e of c.envFrom ?? []) {
        if (e.secretRef !== undefined) ref('Secret', e.secretRef.name, undefined, e.secretRef.optional, `${at} envFrom`);
        if (e.configMapRef !== undefined) ref('ConfigMap', e.configMapRef.name, undefined, e.configMapRef.optional, `${at} envFrom`);
      }
    }
    for (const v of w.pod.volumes ?? []) {
      const at = `${where} volume ${v.name}`;
      if (v.configMap !== undefined) {
        ref('ConfigMap', v.configMap.name, undefined, v.configMap.optional, at);
        for (const item of v.configMap.items ?? []) ref('ConfigMap', v.configMap.name, item.key, v.configMap.optional, at);
      }
      if (v.secret !== undefined) {
        ref('Secret', v.secret.secretName, undefined, v.secret.optional, at);
        for (const item of v.secret.items ?? []) ref('Secret', v.secret.secretName, item.key, v.secret.optional, at);
      }
      for (const source of v.projected?.sources ?? []) {
        if (source.configMap !== undefined) ref('ConfigMap', source.configMap.name, undefined, source.configMap.optional, at);
        if (source.secret !== undefined) ref('Secret', source.secret.name, undefined, source.secret.optional, at);
      }
    }
  }
  return out;
}

/**
 * The content of the file a container sees at `path`, when a ConfigMap or Secret volume provides it; a string
 * explaining what is missing otherwise.
 */
export function mountedFile(objects: readonly K8sObject[], w: Workload, containerName: string, path: string): { content: string } | { problem: string } {
  const c = containersOf(w.pod).find((x) => x.name === containerName);
  if (c === undefined) return { problem: `${id(w.object)} has no container ${containerName}` };
  for (const m of c.volumeMounts ?? []) {
    const dir = m.mountPath.replace(/\/$/, '');
    let key: string | undefined;
    if (m.subPath !== undefined) {
      if (path !== dir) continue;
      key = m.subPath;
    } else {
      if (!path.startsWith(`${dir}/`)) continue;
      key = path.slice(dir.length + 1);
    }
    const v = (w.pod.volumes ?? []).find((x) => x.name === m.name);
    const source = v?.configMap !== undefined ? { kind: 'ConfigMap', name: v.configMap.name, items: v.configMap.items } : v?.secret !== undefined ? { kind: 'Secret', name: v.secret.secretName, items: v.secret.items } : undefined;
    if (source === undefined) continue;
    if (source.items !== undefined) {
      const item = source.items.find((i) => i.path === key);
      if (item === undefined) return { problem: `${path}: volume ${m.name} does not project a file ${key}` };
      key = item.key;
    }
    const obj = find(objects, source.kind, w.object.metadata.namespace, source.name);
    if (obj === undefined) return { problem: `${path}: ${source.kind} ${source.name} does not exist` };
    const data = obj.data?.[key];
    // A Secret's data is base64; its stringData and a ConfigMap's data are the text itself.
    const content = obj.stringData?.[key] ?? (data !== undefined && source.kind === 'Secret' ? Buffer.from(data, 'base64').toString('utf8') : data);
    if (content === undefined) return { problem: `${path}: ${source.kind} ${source.name} has no key ${key}` };
    return { content };
  }
  return { problem: `${path}: no ConfigMap or Secret volume of ${id(w.object)} container ${containerName} provides it` };
}

/** Every `--config FILE` a container is started with is a file its mounts provide. */
export function checkConfigFiles(objects: readonly K8sObject[]): Problems {
  const out: Problems = [];
  for (const w of workloads(objects)) {
    for (const c of containersOf(w.pod)) {
      const argv = [...(c.command ?? []), ...(c.args ?? [])];
      argv.forEach((a, i) => {
        const path = a === '--config' ? argv[i + 1] : a.startsWith('--config=') ? a.slice('--config='.length) : undefined;
        if (path === undefined || !path.startsWith('/')) return;
        const file = mountedFile(objects, w, c.name, path);
        if ('problem' in file) out.push(`${id(w.object)} container ${c.name}: --config ${file.problem}`);
      });
    }
  }
  return out;
}

// ---- RBAC --------------------------------------------------------------------------------------------------------

/** A grant as "apiGroup/resource:verb" (core group empty: "/pods:get"). */
export type Grant = string;

/** What each ServiceAccount may do, exactly: granting less or more is a problem. */
export type RbacPolicy = Record<string, readonly Grant[]>;

/** Kinds a resource of a rule names, for checking resourceNames. */
const RESOURCE_KINDS: Record<string, string> = { deployments: 'Deployment', statefulsets: 'StatefulSet', configmaps: 'ConfigMap', secrets: 'Secret', services: 'Service' };

/** The grants each ServiceAccount holds through RoleBindings in the objects, keyed "namespace/name". */
export function grantsBySubject(objects: readonly K8sObject[]): Map<string, Set<Grant>> {
  const out = new Map<string, Set<Grant>>();
  for (const rb of objects.filter((o) => o.kind === 'RoleBinding')) {
    const roleRef = rb.roleRef as RoleRef | undefined;
    const role = roleRef?.kind === 'Role' ? find(objects, 'Role', rb.metadata.namespace, roleRef.name) : undefined;
    if (role === undefined) continue;
    for (const s of (rb.subjects as Subject[] | undefined) ?? []) {
      if (s.kind !== 'ServiceAccount') continue;
      const key = `${s.namespace}/${s.name}`;
      const set = out.get(key) ?? new Set<Grant>();
      for (const rule of (role.rules as PolicyRule[] | undefined) ?? []) {
        for (const g of rule.apiGroups ?? []) for (const r of rule.resources ?? []) for (const v of rule.verbs ?? []) set.add(`${g}/${r}:${v}`);
      }
      out.set(key, set);
    }
  }
  return out;
}

/**
 * No ClusterRole or ClusterRoleBinding, no wildcard anywhere, every binding to an existing Role and
 * ServiceAccount, resourceNames naming objects that exist, and each ServiceAccount granted exactly what the
 * policy says (a ServiceAccount the policy does not name gets nothing).
 */
export function checkRbac(objects: readonly K8sObject[], policy: RbacPolicy): Problems {
  const out: Problems = [];
  for (const o of objects) {
    if (o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding') out.push(`${id(o)}: cluster-wide RBAC is not allowed, use a Role in the namespace`);
  }
  const bound = new Set<string>();
  for (const rb of objects.filter((o) => o.kind === 'RoleBinding')) {
    const roleRef = rb.roleRef as RoleRef | undefined;
    if (roleRef?.kind !== 'Role') out.push(`${id(rb)}: roleRef must be a Role, not ${roleRef?.kind}`);
    else if (find(objects, 'Role', rb.metadata.namespace, roleRef.name) === undefined) out.push(`${id(rb)}: Role ${roleRef.name} does not exist`);
    else bound.add(roleRef.name!);
    if (roleRef?.apiGroup !== 'rbac.authorization.k8s.io') out.push(`${id(rb)}: roleRef.apiGroup must be rbac.authorization.k8s.io`);
    const subjects = (rb.subjects as Subject[] | undefined) ?? [];
    if (subjects.length === 0) out.push(`${id(rb)}: no subjects`);
    for (const s of subjects) {
      if (s.kind !== 'ServiceAccount') out.push(`${id(rb)}: subject ${s.kind} ${s.name}: only ServiceAccounts are expected`);
      else if (s.namespace === undefined) out.push(`${id(rb)}: ServiceAccount subject ${s.name} needs a namespace`);
      else if (find(objects, 'ServiceAccount', s.namespace, s.name) === undefined) out.push(`${id(rb)}: ServiceAccount ${s.namespace}/${s.name} does not exist`);
    }
  }
  for (const role of objects.filter((o) => o.kind === 'Role' || o.kind === 'ClusterRole')) {
    if (role.kind === 'Role' && !bound.has(role.metadata.name)) out.push(`${id(role)}: bound by no RoleBinding`);
    for (const rule of (role.rules as PolicyRule[] | undefined) ?? []) {
      for (const [field, values] of [
        ['verbs', rule.verbs],
        ['resources', rule.resources],
        ['apiGroups', rule.apiGroups],
        ['resourceNames', rule.resourceNames],
      ] as const) {
        if ((values ?? []).some((v) => v.includes('*'))) out.push(`${id(role)}: wildcard in ${field}`);
      }
      if ((rule.verbs ?? []).length === 0 || (rule.resources ?? []).length === 0) out.push(`${id(role)}: a rule without verbs or resources`);
      if (rule.nonResourceURLs !== undefined) out.push(`${id(role)}: nonResourceURLs`);
      for (const name of rule.resourceNames ?? []) {
        for (const r of rule.resources ?? []) {
          const kind = RESOURCE_KINDS[r.split('/')[0]!];
          if (kind !== undefined && find(objects, kind, role.metadata.namespace, name) === undefined) out.push(`${id(role)}: resourceNames names ${kind} ${name}, which does not exist`);
        }
      }
    }
  }
  const grants = grantsBySubject(objects);
  const accounts = objects.filter((o) => o.kind === 'ServiceAccount');
  for (const sa of accounts) {
    const have = grants.get(`${sa.metadata.namespace}/${sa.metadata.name}`) ?? new Set<Grant>();
    const want = new Set(policy[sa.metadata.name] ?? []);
    for (const g of have) if (!want.has(g)) out.push(`ServiceAccount ${sa.metadata.name}: granted ${g}, beyond what it needs`);
    for (const g of want) if (!have.has(g)) out.push(`ServiceAccount ${sa.metadata.name}: lacks ${g}`);
  }
  for (const name of Object.keys(policy)) {
    if (!accounts.some((a) => a.metadata.name === name)) out.push(`ServiceAccount ${name}: named by the policy, does not exist`);
  }
  return out;
}

/** Every check that needs nothing but the objects and the RBAC policy. */
export function checkAll(objects: readonly K8sObject[], policy: RbacPolicy): Problems {
  return [...checkObjects(objects), ...checkSelectors(objects), ...checkPods(objects), ...checkReferences(objects), ...checkConfigFiles(objects), ...checkRbac(objects, policy)];
}
