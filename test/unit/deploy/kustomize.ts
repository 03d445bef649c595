import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { K8sObject, PodSpec } from './k8s-types.js';

/**
 * A small, strict kustomize: enough to build deploy/kubernetes without kubectl, and nothing it does not do the
 * way kustomize v5 does. A kustomization field it does not know is an error rather than silently ignored, so a
 * build here never differs quietly from `kubectl apply -k`. (manifests.test.ts compares the two when kubectl is
 * on the PATH.)
 *
 * Supported: resources (files and directories), namespace, images, replicas, patches (JSON 6902, inline, with a
 * kind/name target).
 */

export interface Build {
  readonly objects: K8sObject[];
  /** Every file the build read, kustomization files included. */
  readonly files: string[];
}

/** Parses a multi-document YAML text into objects; empty documents are skipped, anything else must be an object. */
export function parseManifests(text: string, source: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) throw new Error(`${source}: a document is not a mapping`);
    const obj = value as Partial<K8sObject>;
    if (typeof obj.apiVersion !== 'string' || typeof obj.kind !== 'string' || typeof obj.metadata?.name !== 'string') {
      throw new Error(`${source}: a document lacks apiVersion, kind or metadata.name`);
    }
    out.push(obj as K8sObject);
  }
  return out;
}

const KNOWN_FIELDS = new Set(['apiVersion', 'kind', 'resources', 'namespace', 'images', 'replicas', 'patches']);

/** Kinds that have no namespace (the namespace transformer leaves them alone, Namespace aside). */
export const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'PersistentVolume',
  'StorageClass',
  'PriorityClass',
  'ValidatingWebhookConfiguration',
  'MutatingWebhookConfiguration',
]);

interface ImageRule {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}
interface ReplicaRule {
  name: string;
  count: number;
}
interface PatchRule {
  target?: { kind?: string; name?: string; namespace?: string };
  patch?: string;
  path?: string;
}
interface Kustomization {
  resources?: string[];
  namespace?: string;
  images?: ImageRule[];
  replicas?: ReplicaRule[];
  patches?: PatchRule[];
}

/** Builds the kustomization in `dir` (a directory holding kustomization.yaml). */
export function buildKustomization(dir: string): Build {
  const file = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'].map((f) => join(dir, f)).find((f) => existsSync(f));
  if (file === undefined) throw new Error(`${dir}: no kustomization.yaml`);
  const raw: unknown = parseAllDocuments(readFileSync(file, 'utf8'))[0]?.toJS();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: not a mapping`);
  for (const key of Object.keys(raw)) {
    if (!KNOWN_FIELDS.has(key)) throw new Error(`${file}: kustomization field "${key}" is not supported by this builder`);
  }
  const k = raw as Kustomization;
  const files = [resolve(file)];
  let objects: K8sObject[] = [];
  for (const entry of k.resources ?? []) {
    if (/^[a-z]+:\/\//.test(entry) || entry.startsWith('github.com/')) throw new Error(`${file}: remote resource ${entry} is not supported`);
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new Error(`${file}: resource ${entry} does not exist`);
    if (statSync(path).isDirectory()) {
      const sub = buildKustomization(path);
      objects.push(...sub.objects);
      files.push(...sub.files);
    } else {
      objects.push(...parseManifests(readFileSync(path, 'utf8'), path));
      files.push(path);
    }
  }
  const seen = new Set<string>();
  for (const o of objects) {
    const id = objectId(o);
    if (seen.has(id)) throw new Error(`${file}: ${id} is defined twice`);
    seen.add(id);
  }
  for (const p of k.patches ?? []) objects = applyPatch(objects, p, dir, file, files);
  if (k.namespace !== undefined) objects = objects.map((o) => setNamespace(o, k.namespace!));
  for (const r of k.replicas ?? []) {
    const targets = objects.filter((o) => o.metadata.name === r.name && ['Deployment', 'StatefulSet', 'ReplicaSet'].includes(o.kind));
    if (targets.length === 0) throw new Error(`${file}: replicas: no workload named ${r.name}`);
    for (const t of targets) (t.spec as { replicas?: number }).replicas = r.count;
  }
  for (const rule of k.images ?? []) objects.forEach((o) => setImages(o, rule));
  return { objects, files: [...new Set(files)] };
}

export function objectId(o: K8sObject): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

function setNamespace(o: K8sObject, namespace: string): K8sObject {
  const copy = structuredClone(o);
  if (copy.kind === 'Namespace') {
    // kustomize renames the Namespace object itself.
    copy.metadata.name = namespace;
    return copy;
  }
  if (!CLUSTER_SCOPED.has(copy.kind)) copy.metadata.namespace = namespace;
  if (copy.kind === 'RoleBinding' || copy.kind === 'ClusterRoleBinding') {
    // kustomize v5 moves only ServiceAccount subjects named "default"; others keep the namespace they name.
    for (const s of (copy as { subjects?: Array<{ kind?: string; name?: string; namespace?: string }> }).subjects ?? []) {
      if (s.kind === 'ServiceAccount' && s.name === 'default') s.namespace = namespace;
    }
  }
  return copy;
}

function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const [nameTag, digest] = image.split('@') as [string, string | undefined];
  const slash = nameTag.lastIndexOf('/');
  const colon = nameTag.lastIndexOf(':');
  if (colon > slash) return { name: nameTag.slice(0, colon), tag: nameTag.slice(colon + 1), ...(digest ? { digest } : {}) };
  return { name: nameTag, ...(digest ? { digest } : {}) };
}

function setImages(o: K8sObject, rule: ImageRule): void {
  const pod = podSpecOf(o);
  if (pod === undefined) return;
  for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
    if (c.image === undefined) continue;
    const img = splitImage(c.image);
    if (img.name !== rule.name) continue;
    const name = rule.newName ?? img.name;
    if (rule.digest !== undefined) c.image = `${name}@${rule.digest}`;
    else if (rule.newTag !== undefined) c.image = `${name}:${rule.newTag}`;
    else c.image = `${name}${img.tag !== undefined ? `:${img.tag}` : ''}${img.digest !== undefined ? `@${img.digest}` : ''}`;
  }
}

/** The pod template's spec of a workload, or a Pod's spec. */
export function podSpecOf(o: K8sObject): PodSpec | undefined {
  if (o.kind === 'Pod') return o.spec as PodSpec | undefined;
  if (['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job'].includes(o.kind)) {
    return (o.spec as { template?: { spec?: PodSpec } } | undefined)?.template?.spec;
  }
  if (o.kind === 'CronJob') {
    return (o.spec as { jobTemplate?: { spec?: { template?: { spec?: PodSpec } } } } | undefined)?.jobTemplate?.spec?.template?.spec;
  }
  return undefined;
}

type JsonOp = { op: 'add' | 'replace' | 'remove' | 'test'; path: string; value?: unknown };

function applyPatch(objects: K8sObject[], p: PatchRule, dir: string, file: string, files: string[]): K8sObject[] {
  if (p.target === undefined) throw new Error(`${file}: a patch without a target is not supported`);
  let text = p.patch;
  if (text === undefined && p.path !== undefined) {
    const path = resolve(dir, p.path);
    text = readFileSync(path, 'utf8');
    files.push(path);
  }
  if (text === undefined) throw new Error(`${file}: a patch has neither patch nor path`);
  const ops: unknown = parseAllDocuments(text)[0]?.toJS();
  if (!Array.isArray(ops)) throw new Error(`${file}: only JSON 6902 patches (a list of operations) are supported`);
  const t = p.target;
  const matches = objects.filter(
    (o) => (t.kind === undefined || o.kind === t.kind) && (t.name === undefined || o.metadata.name === t.name) && (t.namespace === undefined || o.metadata.namespace === t.namespace),
  );
  if (matches.length === 0) throw new Error(`${file}: patch target ${JSON.stringify(t)} matches nothing`);
  return objects.map((o) => {
    if (!matches.includes(o)) return o;
    let doc: unknown = structuredClone(o);
    for (const op of ops as JsonOp[]) doc = applyJsonOp(doc, op, file);
    return doc as K8sObject;
  });
}

function decodePointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new Error(`bad JSON pointer ${path}`);
  return path
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function applyJsonOp(doc: unknown, op: JsonOp, file: string): unknown {
  const keys = decodePointer(op.path);
  if (keys.length === 0) throw new Error(`${file}: a patch may not replace a whole object`);
  let node: unknown = doc;
  for (const key of keys.slice(0, -1)) {
    node = Array.isArray(node) ? node[Number(key)] : (node as Record<string, unknown> | undefined)?.[key];
    if (node === undefined || node === null || typeof node !== 'object') throw new Error(`${file}: patch path ${op.path} does not exist`);
  }
  const last = keys[keys.length - 1]!;
  if (Array.isArray(node)) {
    const index = last === '-' ? node.length : Number(last);
    if (!Number.isInteger(index) || index < 0 || index > node.length) throw new Error(`${file}: patch path ${op.path}: bad index`);
    if (op.op === 'add') node.splice(index, 0, op.value);
    else if (index >= node.length) throw new Error(`${file}: patch path ${op.path} does not exist`);
    else if (op.op === 'replace') node[index] = op.value;
    else if (op.op === 'remove') node.splice(index, 1);
    else if (JSON.stringify(node[index]) !== JSON.stringify(op.value)) throw new Error(`${file}: patch test ${op.path} failed`);
    return doc;
  }
  const obj = node as Record<string, unknown>;
  if (op.op === 'add') obj[last] = op.value;
  else if (!(last in obj)) throw new Error(`${file}: patch path ${op.path} does not exist`);
  else if (op.op === 'replace') obj[last] = op.value;
  else if (op.op === 'remove') delete obj[last];
  else if (JSON.stringify(obj[last]) !== JSON.stringify(op.value)) throw new Error(`${file}: patch test ${op.path} failed`);
  return doc;
}
