import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

/**
 * A Kubernetes API server reduced to what Switchyard's actuator and discovery use, on 127.0.0.1 over plain HTTP:
 * - apps/v1 deployments/{name}/scale and statefulsets/{name}/scale: GET, PATCH (merge, strategic-merge and JSON
 *   patch), PUT (resourceVersion checked when sent);
 * - discovery.k8s.io/v1 endpointslices, namespaced and for all namespaces: list with labelSelector
 *   (equality, inequality, exists, not-exists, in/notin), and watch=true streaming one JSON event per line from
 *   the requested resourceVersion.
 * It keeps state, checks a bearer token, answers errors as Kubernetes Status objects, and records every request
 * so tests can assert exactly what was sent.
 */

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly contentType: string | undefined;
  readonly authorization: string | undefined;
  /** The raw body text ('' when none). */
  readonly rawBody: string;
  /** The body parsed as JSON, undefined when empty or not JSON. */
  readonly body: unknown;
}

export type ScaleResource = 'deployments' | 'statefulsets';

export interface EndpointSliceObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; labels?: Record<string, string>; annotations?: Record<string, string>; resourceVersion?: string };
  addressType: string;
  endpoints: {
    addresses: string[];
    conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
    hostname?: string;
    nodeName?: string;
    zone?: string;
    targetRef?: { kind: string; name: string; namespace?: string };
  }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

export interface FakeKubeApi {
  readonly url: string;
  readonly token: string;
  readonly requests: RecordedRequest[];
  /** A KubeConfig for this server: no TLS, the bearer token, `namespace` as the context's namespace. */
  kubeConfig(opts?: { token?: string; namespace?: string }): KubeConfig;
  setScale(resource: ScaleResource, namespace: string, name: string, replicas: number): void;
  /** spec.replicas, undefined when the object does not exist. */
  scaleOf(resource: ScaleResource, namespace: string, name: string): number | undefined;
  /** Creates or replaces a slice; open watches that match get ADDED or MODIFIED. */
  applyEndpointSlice(slice: EndpointSliceObject): void;
  /** Open watches that match get DELETED. */
  deleteEndpointSlice(namespace: string, name: string): void;
  /** The next `times` requests matching method and path prefix answer `status` with a Status body. */
  failNext(match: { method?: string; pathPrefix?: string }, status: number, times?: number): void;
  /** Watch connections open now. */
  watchCount(): number;
  /** Ends every open watch stream (as the API server does at its timeout). */
  endWatches(): void;
  close(): Promise<void>;
}

interface Watcher {
  res: ServerResponse;
  namespace: string | undefined;
  selector: Selector;
}

interface Event {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  rv: number;
  object: EndpointSliceObject;
}

interface Failure {
  method: string | undefined;
  pathPrefix: string | undefined;
  status: number;
  times: number;
}

const JSON_TYPE = 'application/json';

export async function startFakeKubeApi(opts: { token?: string } = {}): Promise<FakeKubeApi> {
  const token = opts.token ?? 'fake-token-0123456789';
  const requests: RecordedRequest[] = [];
  const scales = new Map<string, { replicas: number; rv: number }>();
  const slices = new Map<string, EndpointSliceObject>();
  const events: Event[] = [];
  const watchers = new Set<Watcher>();
  const failures: Failure[] = [];
  let rv = 1;

  const scaleKey = (resource: string, ns: string, name: string) => `${resource}/${ns}/${name}`;

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const u = new URL(req.url ?? '/', 'http://fake');
      const query: Record<string, string> = {};
      for (const [k, v] of u.searchParams) query[k] = v;
      let body: unknown;
      try {
        body = rawBody === '' ? undefined : JSON.parse(rawBody);
      } catch {
        body = undefined;
      }
      const method = req.method ?? 'GET';
      requests.push({ method, path: u.pathname, query, contentType: req.headers['content-type'], authorization: req.headers.authorization, rawBody, body });
      try {
        handle(req, res, method, u.pathname, query, body);
      } catch (err) {
        status(res, 500, 'InternalError', err instanceof Error ? err.message : String(err));
      }
    });
  });

  function handle(req: IncomingMessage, res: ServerResponse, method: string, path: string, query: Record<string, string>, body: unknown): void {
    if (req.headers.authorization !== `Bearer ${token}`) return status(res, 401, 'Unauthorized', 'Unauthorized');
    const failure = failures.find((f) => (f.method === undefined || f.method === method) && (f.pathPrefix === undefined || path.startsWith(f.pathPrefix)));
    if (failure !== undefined) {
      if (--failure.times <= 0) failures.splice(failures.indexOf(failure), 1);
      return status(res, failure.status, reasonOf(failure.status), failureMessage(failure.status, method, path));
    }

    let m = /^\/apis\/apps\/v1\/namespaces\/([^/]+)\/(deployments|statefulsets)\/([^/]+)\/scale$/.exec(path);
    if (m !== null) return handleScale(req, res, method, m[2]!, decodeURIComponent(m[1]!), decodeURIComponent(m[3]!), body);

    m = /^\/apis\/discovery\.k8s\.io\/v1(?:\/namespaces\/([^/]+))?\/endpointslices$/.exec(path);
    if (m !== null && method === 'GET') {
      const ns = m[1] === undefined ? undefined : decodeURIComponent(m[1]);
      let selector: Selector;
      try {
        selector = parseSelector(query.labelSelector ?? '');
      } catch (err) {
        return status(res, 400, 'BadRequest', (err as Error).message);
      }
      if (query.watch === 'true' || query.watch === '1') return handleWatch(res, ns, selector, query.resourceVersion);
      const items = [...slices.values()].filter((s) => (ns === undefined || s.metadata.namespace === ns) && selector(s.metadata.labels ?? {}));
      return json(res, 200, { kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: String(rv) }, items });
    }
    status(res, 404, 'NotFound', `the server could not find the requested resource (${method} ${path})`);
  }

  function handleScale(req: IncomingMessage, res: ServerResponse, method: string, resource: string, ns: string, name: string, body: unknown): void {
    const key = scaleKey(resource, ns, name);
    const cur = scales.get(key);
    const notFound = () => status(res, 404, 'NotFound', `${resource}.apps "${name}" not found`, { name, group: 'apps', kind: resource });
    if (cur === undefined) return notFound();
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    if (method === 'GET') return json(res, 200, scaleObject(resource, ns, name, cur));
    if (method === 'PATCH') {
      let replicas: unknown;
      if (contentType === 'application/merge-patch+json' || contentType === 'application/strategic-merge-patch+json') {
        replicas = (body as { spec?: { replicas?: unknown } } | undefined)?.spec?.replicas;
      } else if (contentType === 'application/json-patch+json') {
        const op = Array.isArray(body) ? (body as { op?: string; path?: string; value?: unknown }[]).find((o) => o.path === '/spec/replicas' && (o.op === 'replace' || o.op === 'add')) : undefined;
        replicas = op?.value;
      } else {
        return status(res, 415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`);
      }
      if (replicas === undefined) return json(res, 200, scaleObject(resource, ns, name, cur));
      if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) return status(res, 422, 'Invalid', `Scale.autoscaling "${name}" is invalid: spec.replicas: Invalid value`);
      cur.replicas = replicas;
      cur.rv = ++rv;
      return json(res, 200, scaleObject(resource, ns, name, cur));
    }
    if (method === 'PUT') {
      if (contentType !== JSON_TYPE) return status(res, 415, 'UnsupportedMediaType', `unsupported media type ${contentType}`);
      const b = body as { metadata?: { resourceVersion?: string }; spec?: { replicas?: unknown } } | undefined;
      const sentRv = b?.metadata?.resourceVersion;
      if (sentRv !== undefined && sentRv !== '' && sentRv !== String(cur.rv)) {
        return status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource}.apps "${name}": the object has been modified; please apply your changes to the latest version and try again`);
      }
      const replicas = b?.spec?.replicas;
      if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) return status(res, 422, 'Invalid', `Scale.autoscaling "${name}" is invalid: spec.replicas: Invalid value`);
      cur.replicas = replicas;
      cur.rv = ++rv;
      return json(res, 200, scaleObject(resource, ns, name, cur));
    }
    status(res, 405, 'MethodNotAllowed', `${method} is not supported on the scale subresource`);
  }

  function handleWatch(res: ServerResponse, ns: string | undefined, selector: Selector, fromRv: string | undefined): void {
    res.writeHead(200, { 'content-type': JSON_TYPE, 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const watcher: Watcher = { res, namespace: ns, selector };
    const since = fromRv === undefined || fromRv === '' || fromRv === '0' ? rv : Number(fromRv);
    for (const e of events) if (e.rv > since) send(watcher, e);
    watchers.add(watcher);
    res.on('close', () => watchers.delete(watcher));
  }

  function send(w: Watcher, e: Event): void {
    if (w.namespace !== undefined && e.object.metadata.namespace !== w.namespace) return;
    if (!w.selector(e.object.metadata.labels ?? {})) return;
    w.res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
  }

  function publish(type: Event['type'], object: EndpointSliceObject): void {
    const e: Event = { type, rv, object };
    events.push(e);
    for (const w of watchers) send(w, e);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    token,
    requests,
    kubeConfig(o = {}) {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
        users: [{ name: 'fake', token: o.token ?? token }],
        contexts: [{ name: 'fake', cluster: 'fake', user: 'fake', namespace: o.namespace ?? 'default' }],
        currentContext: 'fake',
      });
      return kc;
    },
    setScale(resource, namespace, name, replicas) {
      scales.set(scaleKey(resource, namespace, name), { replicas, rv: ++rv });
    },
    scaleOf(resource, namespace, name) {
      return scales.get(scaleKey(resource, namespace, name))?.replicas;
    },
    applyEndpointSlice(slice) {
      const key = `${slice.metadata.namespace}/${slice.metadata.name}`;
      const existed = slices.has(key);
      const obj: EndpointSliceObject = structuredClone({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', ...slice, metadata: { ...slice.metadata, resourceVersion: String(++rv) } });
      slices.set(key, obj);
      publish(existed ? 'MODIFIED' : 'ADDED', obj);
    },
    deleteEndpointSlice(namespace, name) {
      const key = `${namespace}/${name}`;
      const obj = slices.get(key);
      if (obj === undefined) return;
      slices.delete(key);
      publish('DELETED', { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++rv) } });
    },
    failNext(match, statusCode, times = 1) {
      failures.push({ method: match.method, pathPrefix: match.pathPrefix, status: statusCode, times });
    },
    watchCount: () => watchers.size,
    endWatches() {
      for (const w of watchers) w.res.end();
      watchers.clear();
    },
    async close() {
      for (const w of watchers) w.res.destroy();
      watchers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function scaleObject(resource: string, ns: string, name: string, s: { replicas: number; rv: number }): unknown {
  return {
    kind: 'Scale',
    apiVersion: 'autoscaling/v1',
    metadata: { name, namespace: ns, resourceVersion: String(s.rv) },
    spec: { replicas: s.replicas },
    status: { replicas: s.replicas, selector: `app=${name}` },
  };
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function status(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, string>): void {
  json(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details === undefined ? {} : { details }), code });
}

function reasonOf(code: number): string {
  return { 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict', 410: 'Expired', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable' }[code] ?? 'Unknown';
}

function failureMessage(code: number, method: string, path: string): string {
  if (code !== 403) return `${reasonOf(code)} (${method} ${path})`;
  const verb = method === 'GET' ? 'get' : method === 'PATCH' ? 'patch' : method === 'PUT' ? 'update' : method.toLowerCase();
  return `forbidden: User "system:serviceaccount:default:switchyard" cannot ${verb} ${path}`;
}

type Selector = (labels: Record<string, string>) => boolean;

/** Kubernetes label selector syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, comma-joined. */
export function parseSelector(text: string): Selector {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  const tests: Selector[] = [];
  for (const raw of parts) {
    const p = raw.trim();
    if (p === '') continue;
    let m: RegExpExecArray | null;
    if ((m = /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(p)) !== null) {
      const [, key, op, list] = m as unknown as [string, string, string, string];
      const values = new Set(list.split(',').map((v) => v.trim()));
      tests.push(op === 'in' ? (l) => l[key] !== undefined && values.has(l[key]) : (l) => l[key] === undefined || !values.has(l[key]));
    } else if ((m = /^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$/.exec(p)) !== null) {
      const [, key, op, value] = m as unknown as [string, string, string, string];
      tests.push(op === '!=' ? (l) => l[key] !== value : (l) => l[key] === value);
    } else if ((m = /^!([\w./-]+)$/.exec(p)) !== null) {
      const key = m[1]!;
      tests.push((l) => l[key] === undefined);
    } else if ((m = /^([\w./-]+)$/.exec(p)) !== null) {
      const key = m[1]!;
      tests.push((l) => l[key] !== undefined);
    } else {
      throw new Error(`unable to parse requirement: ${JSON.stringify(p)}`);
    }
  }
  return (labels) => tests.every((t) => t(labels));
}
