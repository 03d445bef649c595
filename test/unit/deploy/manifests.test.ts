import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { loadAutoscalerConfig } from '../../../autoscaler/config.js';
import { ConfigSchema, loadConfig } from '../../../core/config.js';
import { checkAll, containersOf, grantsBySubject, mountedFile, selectedWorkloads, selectorMatches, workloads, type RbacPolicy, type Workload } from './checks.js';
import type { Container, K8sObject, ServiceSpec } from './k8s-types.js';
import { buildKustomization, objectId, parseManifests, type Build } from './kustomize.js';
import { checkGrafanaDashboard, checkPrometheusConfig, grafanaExprs, knownMetricNames, unknownMetrics, type PrometheusConfig } from './observability.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const kubeDir = join(root, 'deploy/kubernetes');

/**
 * What each ServiceAccount may do, exactly. The router reads EndpointSlices (core/discovery/kubernetes.ts lists and
 * watches them); the autoscaler reads and merge-patches the scale subresource (autoscaler/actuators/kubernetes.ts).
 */
const POLICY: RbacPolicy = {
  'switchyard-router': ['discovery.k8s.io/endpointslices:get', 'discovery.k8s.io/endpointslices:list', 'discovery.k8s.io/endpointslices:watch'],
  'switchyard-autoscaler': ['apps/deployments/scale:get', 'apps/deployments/scale:patch'],
};

const EXPECTED_JOBS = ['switchyard-router', 'switchyard-sidecar', 'switchyard-autoscaler'];

/** A Kubernetes equality label selector ("a=b,c=d") as a map. */
function parseEqualitySelector(s: string): Record<string, string> {
  return Object.fromEntries(
    s.split(',').map((part) => {
      const m = /^\s*([^=!\s]+)\s*==?\s*(\S*)\s*$/.exec(part);
      if (m === null) throw new Error(`not an equality selector: ${s}`);
      return [m[1]!, m[2]!];
    }),
  );
}

/** Loads a YAML text the way a command loads its --config file. */
function withTempFile<T>(text: string, load: (path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-deploy-'));
  try {
    writeFileSync(join(dir, 'config.yaml'), text);
    return load(join(dir, 'config.yaml'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

const yamlFiles = walk(kubeDir).filter((f) => /\.ya?ml$/.test(f));
const kustomizationDirs = yamlFiles.filter((f) => /\/kustomization\.ya?ml$/.test(f)).map((f) => resolve(f, '..'));

function onPath(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--help'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const hasKubectl = onPath('kubectl');
const hasPromtool = onPath('promtool');

function one(objects: readonly K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  expect(found, `${kind} ${name}`).toHaveLength(1);
  return found[0]!;
}
function workload(objects: readonly K8sObject[], name: string): Workload {
  const w = workloads(objects).find((x) => x.object.metadata.name === name);
  expect(w, `workload ${name}`).toBeDefined();
  return w!;
}
function container(w: Workload, name: string): Container {
  const c = containersOf(w.pod).find((x) => x.name === name);
  expect(c, `container ${name} of ${w.object.metadata.name}`).toBeDefined();
  return c!;
}
function fileContent(objects: readonly K8sObject[], w: Workload, containerName: string, path: string): string {
  const f = mountedFile(objects, w, containerName, path);
  if ('problem' in f) throw new Error(f.problem);
  return f.content;
}
function flagValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i < 0 ? undefined : args[i + 1];
}

describe('deploy/kubernetes', () => {
  it('every YAML file parses and belongs to a kustomization', () => {
    expect(kustomizationDirs.map((d) => relative(kubeDir, d)).sort()).toEqual(['base', 'overlays/example']);
    const used = new Set(kustomizationDirs.flatMap((d) => buildKustomization(d).files));
    for (const f of yamlFiles) {
      const docs = parseAllDocuments(readFileSync(f, 'utf8'));
      expect(docs.flatMap((d) => d.errors), f).toEqual([]);
      if (!/kustomization\.ya?ml$/.test(f)) expect(parseManifests(readFileSync(f, 'utf8'), f).length, f).toBeGreaterThan(0);
      expect(used.has(resolve(f)), `${relative(root, f)} is in no kustomization's resources`).toBe(true);
    }
  });

  describe.each(kustomizationDirs.map((d) => [relative(kubeDir, d), d] as const))('%s', (name, dir) => {
    let build: Build;
    let objects: K8sObject[];
    beforeAll(() => {
      build = buildKustomization(dir);
      objects = build.objects;
    });

    it('holds together: names, selectors, ports, probes, requests, references, mounted configs and RBAC', () => {
      expect(checkAll(objects, POLICY)).toEqual([]);
    });

    it('is one namespace with the router, engine and autoscaler pieces', () => {
      const namespaces = objects.filter((o) => o.kind === 'Namespace');
      expect(namespaces.map((n) => n.metadata.name)).toEqual(['switchyard']);
      const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
      for (const expected of [
        'Deployment/switchyard-router',
        'Service/switchyard-router',
        'ServiceAccount/switchyard-router',
        'Role/switchyard-router',
        'RoleBinding/switchyard-router',
        'ConfigMap/switchyard-config',
        'Secret/switchyard-secrets',
        'Deployment/switchyard-engine',
        'Service/switchyard-engine',
        'Deployment/switchyard-autoscaler',
        'ServiceAccount/switchyard-autoscaler',
        'Role/switchyard-autoscaler',
        'RoleBinding/switchyard-autoscaler',
        'ConfigMap/switchyard-autoscaler',
      ]) {
        expect(kinds).toContain(expected);
      }
      expect(objects.some((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')).toBe(false);
    });

    it('router: replicas behind a ClusterIP Service on port 80, probes, Secret env, config from the ConfigMap', () => {
      const router = workload(objects, 'switchyard-router');
      expect((router.object.spec as { replicas?: number }).replicas).toBeGreaterThanOrEqual(3);
      if (name === 'base') expect((router.object.spec as { replicas?: number }).replicas).toBe(3);
      const c = container(router, 'router');
      expect(c.args).toEqual(['serve', '--config', '/etc/switchyard/switchyard.yaml']);
      const http = c.ports?.find((p) => p.name === 'http');
      expect(http?.containerPort).toBe(8080);
      expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http' });
      expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
      for (const env of ['REDIS_URL', 'DATABASE_URL', 'SWITCHYARD_ADMIN_KEY']) {
        expect(c.env?.find((e) => e.name === env)?.valueFrom?.secretKeyRef?.name, env).toBe('switchyard-secrets');
      }
      expect(c.volumeMounts?.find((m) => m.mountPath === '/etc/switchyard')).toBeDefined();
      expect(router.pod.serviceAccountName).toBe('switchyard-router');

      const svc = one(objects, 'Service', 'switchyard-router').spec as ServiceSpec;
      expect(svc.type ?? 'ClusterIP').toBe('ClusterIP');
      expect(svc.ports).toEqual([{ name: 'http', port: 80, targetPort: 'http' }]);
      expect(selectedWorkloads(objects, 'switchyard', svc.selector).map((w) => w.object.metadata.name)).toEqual(['switchyard-router']);
    });

    it('router: the config in the ConfigMap passes the gateway config schema and listens where the pod expects', () => {
      const router = workload(objects, 'switchyard-router');
      const text = fileContent(objects, router, 'router', '/etc/switchyard/switchyard.yaml');
      const raw: unknown = parseYaml(text);
      const parsed = ConfigSchema.safeParse(raw);
      expect(parsed.error?.issues ?? []).toEqual([]);
      const cfg = parsed.data!;
      // Reachable from the Service: not loopback, on the container port.
      expect(['0.0.0.0', '::']).toContain(cfg.server.host);
      expect(cfg.server.port).toBe(container(router, 'router').ports?.find((p) => p.name === 'http')?.containerPort);
      // Credentials come from the Secret, never from the file.
      expect((raw as { redis?: { url?: unknown } }).redis?.url).toBeUndefined();
      expect((raw as { database?: { url?: unknown } }).database?.url).toBeUndefined();
      expect(container(router, 'router').env?.map((e) => e.name)).toContain(cfg.admin.keyEnv);
      // The models the engines announce are models the gateway knows.
      const engineSvc = one(objects, 'Service', 'switchyard-engine');
      expect(cfg.models.map((m) => m.name)).toContain(engineSvc.metadata.labels?.['switchyard.io/models']);
      expect(cfg.adapters.maxPerEngine).toBe(Number(flagValue(container(workload(objects, 'switchyard-engine'), 'vllm').args ?? [], '--max-loras')));

      // As `serve` loads it at run time: the file plus the Secret's values as environment overrides.
      const secret = one(objects, 'Secret', 'switchyard-secrets');
      const loaded = withTempFile(text, (path) => loadConfig({ path, env: { ...secret.stringData } }));
      expect(loaded.redis.url).toBe(secret.stringData?.REDIS_URL);
      expect(loaded.database.url).toBe(secret.stringData?.DATABASE_URL);
    });

    it('router: discovers the engines from the EndpointSlices of the engine Service, in its own namespace', () => {
      const router = workload(objects, 'switchyard-router');
      const cfg = ConfigSchema.parse(parseYaml(fileContent(objects, router, 'router', '/etc/switchyard/switchyard.yaml')));
      const k8s = cfg.discovery.kubernetes;
      expect(k8s.enabled).toBe(true);
      // One source of engines: the sidecars' Redis records name the same pods under other ids.
      expect(cfg.discovery.registry.enabled).toBe(false);
      expect(cfg.engines).toEqual([]);
      // A namespace, or the router would need a ClusterRole to watch them all.
      expect(k8s.namespace).toBe(router.object.metadata.namespace);
      // EndpointSlices carry their Service's labels: the selector must pick the engine Service, and only it.
      const selector = parseEqualitySelector(k8s.labelSelector);
      const services = objects.filter((o) => o.kind === 'Service' && selectorMatches(selector, o.metadata.labels ?? {}));
      expect(services.map((o) => o.metadata.name)).toEqual(['switchyard-engine']);
      const svc = services[0]!;
      const port = (svc.spec as ServiceSpec).ports?.find((p) => (typeof k8s.port === 'number' ? p.port === k8s.port : p.name === k8s.port));
      expect(port, `engine Service port ${String(k8s.port)}`).toBeDefined();
      // ... and that port reaches vLLM's API.
      expect(port!.targetPort).toBe('http');
      expect(container(workload(objects, 'switchyard-engine'), 'vllm').ports?.find((p) => p.name === 'http')?.containerPort).toBe(8000);
      expect(svc.metadata.labels?.['switchyard.io/engine-kind']).toBe('vllm');
    });

    it('engine: vLLM and the sidecar in one pod, a GPU, KV events, LoRA, discovery labels on a headless Service', () => {
      const engine = workload(objects, 'switchyard-engine');
      expect((engine.pod.containers ?? []).map((c) => c.name)).toEqual(['vllm', 'sidecar']);
      // The autoscaler owns the replica count.
      expect((engine.object.spec as { replicas?: number }).replicas).toBeUndefined();

      const vllm = container(engine, 'vllm');
      expect(vllm.image).toMatch(/^vllm\/vllm-openai:v\d/);
      const args = vllm.args ?? [];
      expect(flagValue(args, '--model')).toBeTruthy();
      expect(args).toContain('--enable-lora');
      expect(flagValue(args, '--max-loras')).toBe('4');
      expect(flagValue(args, '--port')).toBe('8000');
      expect(vllm.ports?.find((p) => p.name === 'http')?.containerPort).toBe(8000);
      expect(String(vllm.resources?.limits?.['nvidia.com/gpu'])).toBe('1');
      const kvEvents = JSON.parse(flagValue(args, '--kv-events-config') ?? 'null') as { enable_kv_cache_events?: boolean; publisher?: string; endpoint?: string };
      expect(kvEvents).toMatchObject({ enable_kv_cache_events: true, publisher: 'zmq' });
      const zmqPort = Number(/:(\d+)$/.exec(kvEvents.endpoint ?? '')?.[1]);
      expect(vllm.ports?.find((p) => p.containerPort === zmqPort)?.name).toBe('kv-events');
      expect(vllm.env?.find((e) => e.name === 'VLLM_ALLOW_RUNTIME_LORA_UPDATING')?.value).toBe('True');

      const sidecar = container(engine, 'sidecar');
      // No engine command: vLLM runs in its own container; the sidecar only watches it.
      expect(sidecar.args).toEqual(['sidecar', '--engine', 'vllm', '--engine-port', '8000', '--port', '9000', '--register']);
      expect(sidecar.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'sidecar' });
      expect(sidecar.ports?.find((p) => p.name === 'sidecar')?.containerPort).toBe(9000);
      expect(sidecar.env?.find((e) => e.name === 'REDIS_URL')?.valueFrom?.secretKeyRef?.name).toBe('switchyard-secrets');
      expect(sidecar.resources?.limits?.['nvidia.com/gpu']).toBeUndefined();

      const svc = one(objects, 'Service', 'switchyard-engine');
      const spec = svc.spec as ServiceSpec;
      expect(spec.clusterIP).toBe('None');
      expect(selectedWorkloads(objects, 'switchyard', spec.selector).map((w) => w.object.metadata.name)).toEqual(['switchyard-engine']);
      for (const label of ['switchyard.io/models', 'switchyard.io/engine-kind', 'switchyard.io/pool']) {
        expect(svc.metadata.labels?.[label], label).toBeTruthy();
        expect(engine.labels[label], label).toBe(svc.metadata.labels?.[label]);
      }
      expect(spec.ports?.map((p) => p.name)).toEqual(expect.arrayContaining(['http', 'sidecar', 'kv-events']));
      // The router's EndpointSlice discovery needs exactly this, and the engines nothing.
      const grants = grantsBySubject(objects);
      expect([...(grants.get('switchyard/switchyard-router') ?? [])].sort()).toEqual([...POLICY['switchyard-router']!].sort());
      expect(engine.pod.automountServiceAccountToken).toBe(false);
    });

    it('autoscaler: its config targets the engine Deployment on KV-cache usage from Prometheus, which its Role may scale', async () => {
      const autoscaler = workload(objects, 'switchyard-autoscaler');
      expect((autoscaler.object.spec as { replicas?: number }).replicas).toBe(1);
      const c = container(autoscaler, 'autoscaler');
      expect(c.args?.[0]).toBe('autoscaler');
      const configPath = flagValue(c.args ?? [], '--config')!;
      // The autoscaler's own loader and schema (autoscaler/config.ts), as `switchyard autoscaler` runs it.
      const cfg = withTempFile(fileContent(objects, autoscaler, 'autoscaler', configPath), (path) => loadAutoscalerConfig({ path, env: {} }));
      expect(['0.0.0.0', '::']).toContain(cfg.server.host);
      expect(c.ports?.find((p) => p.name === 'metrics')?.containerPort).toBe(cfg.server.port);
      expect(cfg.targets).toHaveLength(1);
      const t = cfg.targets[0]!;
      expect(t).toMatchObject({ metric: 'kv_cache_usage', targetValue: 0.7, minReplicas: 1, maxReplicas: 8, algorithm: 'kpa' });
      expect(t.actuator).toEqual({ kind: 'kubernetes', namespace: autoscaler.object.metadata.namespace, resource: 'Deployment', name: 'switchyard-engine' });
      if (t.actuator.kind !== 'kubernetes') throw new Error('not a kubernetes actuator');
      expect(workload(objects, t.actuator.name).object.kind).toBe(t.actuator.resource);

      if (t.source.type !== 'prometheus') throw new Error('the source is not Prometheus');
      expect(t.source.query).toContain('vllm:kv_cache_usage_perc');
      expect(unknownMetrics([t.source.query], await knownMetricNames(root))).toEqual([]);
      // The query reads a job prometheus.yml defines.
      const job = /job="([^"]+)"/.exec(t.source.query)?.[1];
      const prom = parseYaml(readFileSync(join(root, 'deploy/prometheus/prometheus.yml'), 'utf8')) as PrometheusConfig;
      expect((prom.scrape_configs ?? []).map((j) => j.job_name)).toContain(job);

      const role = one(objects, 'Role', 'switchyard-autoscaler');
      const rules = role.rules as Array<{ resources?: string[]; resourceNames?: string[] }>;
      expect(rules.flatMap((r) => r.resources ?? [])).toEqual(['deployments/scale']);
      expect(rules.flatMap((r) => r.resourceNames ?? [])).toEqual([t.actuator.name]);
      expect(autoscaler.pod.serviceAccountName).toBe('switchyard-autoscaler');
    });

    it.skipIf(!hasKubectl)('kubectl kustomize builds the same objects', () => {
      const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
      const theirs = new Map(parseManifests(out, 'kubectl kustomize').map((o) => [objectId(o), o]));
      const ours = new Map(objects.map((o) => [objectId(o), o]));
      expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
      for (const [key, o] of ours) expect(o, key).toEqual(theirs.get(key));
    });
  });
});

describe('deploy/prometheus', () => {
  const base = () => buildKustomization(join(kubeDir, 'base')).objects;

  it('prometheus.yml parses and its pod jobs find the router, engine sidecar and autoscaler pods', () => {
    const config = parseYaml(readFileSync(join(root, 'deploy/prometheus/prometheus.yml'), 'utf8')) as PrometheusConfig;
    expect(checkPrometheusConfig(config, base(), EXPECTED_JOBS)).toEqual([]);
    const byJob = new Map((config.scrape_configs ?? []).map((j) => [j.job_name, j]));
    const keptPort = (job: string) =>
      (byJob.get(job) as { relabel_configs?: Array<{ source_labels?: string[]; action?: string; regex?: string }> } | undefined)?.relabel_configs?.find(
        (r) => r.action === 'keep' && r.source_labels?.[0] === '__meta_kubernetes_pod_container_port_name',
      )?.regex;
    expect(keptPort('switchyard-router')).toBe('http');
    expect(keptPort('switchyard-sidecar')).toBe('sidecar');
    expect(keptPort('switchyard-autoscaler')).toBe('metrics');
  });

  it('prometheus-local.yml scrapes the local gateway', () => {
    const config = parseYaml(readFileSync(join(root, 'deploy/prometheus/prometheus-local.yml'), 'utf8')) as PrometheusConfig;
    expect(checkPrometheusConfig(config, [], ['switchyard-router'])).toEqual([]);
    expect(config.scrape_configs?.[0]?.static_configs?.[0]?.targets).toEqual(['127.0.0.1:8080']);
  });

  it.skipIf(!hasPromtool)('promtool accepts prometheus-local.yml', () => {
    execFileSync('promtool', ['check', 'config', join(root, 'deploy/prometheus/prometheus-local.yml')], { stdio: 'pipe' });
  });
});

describe('deploy/grafana', () => {
  const dashboard = () => JSON.parse(readFileSync(join(root, 'deploy/grafana/switchyard-dashboard.json'), 'utf8')) as Parameters<typeof checkGrafanaDashboard>[0];

  it('is a valid dashboard whose every query names metrics that exist', async () => {
    expect(checkGrafanaDashboard(dashboard(), await knownMetricNames(root))).toEqual([]);
  });

  it('has the panels issue 6 asks for', () => {
    const exprs = grafanaExprs(dashboard()).join('\n');
    for (const needed of [
      'sum by (status) (rate(switchyard_requests_total',
      'histogram_quantile(0.5, sum by (le) (rate(switchyard_time_to_first_token_seconds_bucket',
      'histogram_quantile(0.95, sum by (le) (rate(switchyard_time_to_first_token_seconds_bucket',
      'switchyard_in_flight_requests',
      'vllm:kv_cache_usage_perc',
      'switchyard_prefix_blocks_total{kind="matched"',
      'switchyard_prefix_blocks_total{kind="prompt"',
      'switchyard_rate_limited_total',
      'switchyard_queue_length',
      'switchyard_queue_wait_seconds_bucket',
      'switchyard_queue_rejected_total',
      'switchyard_adapters_resident',
      'switchyard_autoscaler_desired_replicas',
      'switchyard_autoscaler_current_replicas',
    ]) {
      expect(exprs).toContain(needed);
    }
  });

  it.skipIf(!hasPromtool)('promtool parses every expression', () => {
    const exprs = grafanaExprs(dashboard()).map((e) => e.replace(/\$__rate_interval/g, '5m').replace(/\$\w+/g, '.*'));
    const rules = { groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:expr${i}`, expr })) }] };
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-promql-'));
    try {
      writeFileSync(join(dir, 'rules.json'), JSON.stringify(rules));
      execFileSync('promtool', ['check', 'rules', join(dir, 'rules.json')], { stdio: 'pipe' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
