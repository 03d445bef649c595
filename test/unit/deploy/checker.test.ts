import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { checkAll, checkConfigFiles, checkObjects, checkPods, checkRbac, checkReferences, checkSelectors, type RbacPolicy } from './checks.js';
import type { Container, K8sObject, PodSpec } from './k8s-types.js';
import { buildKustomization, parseManifests } from './kustomize.js';
import {
  bracketProblems,
  checkGrafanaDashboard,
  checkPrometheusConfig,
  knownMetricNames,
  metricNamesInPromQL,
  metricNamesInSource,
  unknownMetrics,
  type PrometheusConfig,
} from './observability.js';

/** The checks on small inputs: a set that holds together, then one break at a time, each reported. */

const FIXTURE = `
apiVersion: v1
kind: Namespace
metadata: { name: ns }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: app, namespace: ns }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: app, namespace: ns }
rules:
  - apiGroups: ["apps"]
    resources: ["deployments/scale"]
    resourceNames: ["web"]
    verbs: ["get", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: app, namespace: ns }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: app }
subjects:
  - { kind: ServiceAccount, name: app, namespace: ns }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: cfg, namespace: ns }
data:
  app.yaml: "port: 8080"
---
apiVersion: v1
kind: Secret
metadata: { name: creds, namespace: ns }
stringData:
  TOKEN: abc
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: ns }
spec:
  replicas: 2
  selector:
    matchLabels: { app: web }
  template:
    metadata:
      labels: { app: web, tier: front }
      annotations: { prometheus.io/scrape: "true", prometheus.io/port: "8080" }
    spec:
      serviceAccountName: app
      containers:
        - name: web
          image: example/web:1.0
          args: ["--config", "/etc/app/app.yaml"]
          ports: [{ name: http, containerPort: 8080 }]
          readinessProbe: { httpGet: { path: /readyz, port: http } }
          livenessProbe: { httpGet: { path: /healthz, port: 8080 } }
          env:
            - name: TOKEN
              valueFrom: { secretKeyRef: { name: creds, key: TOKEN } }
          resources:
            requests: { cpu: 100m, memory: 64Mi, nvidia.com/gpu: "1" }
            limits: { nvidia.com/gpu: "1" }
          volumeMounts: [{ name: config, mountPath: /etc/app }]
      volumes:
        - name: config
          configMap: { name: cfg }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: ns }
spec:
  selector: { app: web }
  ports: [{ name: http, port: 80, targetPort: http }]
`;

const POLICY: RbacPolicy = { app: ['apps/deployments/scale:get', 'apps/deployments/scale:patch'] };

function fixture(): K8sObject[] {
  return parseManifests(FIXTURE, 'fixture');
}
function get(objects: K8sObject[], kind: string, name = kind === 'Namespace' ? 'ns' : kind === 'ConfigMap' ? 'cfg' : kind === 'Secret' ? 'creds' : kind === 'Deployment' || kind === 'Service' ? 'web' : 'app'): K8sObject {
  return objects.find((o) => o.kind === kind && o.metadata.name === name)!;
}
function pod(objects: K8sObject[]): PodSpec {
  return (get(objects, 'Deployment').spec as { template: { spec: PodSpec } }).template.spec;
}
function web(objects: K8sObject[]): Container {
  return pod(objects).containers![0]!;
}
/** The problems after `mutate`, checked to be only those of the break (the fixture itself has none). */
function broken(mutate: (objects: K8sObject[]) => void): string[] {
  const objects = fixture();
  mutate(objects);
  return checkAll(objects, POLICY);
}

describe('deploy checks on small inputs', () => {
  it('find nothing wrong in a set that holds together', () => {
    expect(checkAll(fixture(), POLICY)).toEqual([]);
  });

  describe('selectors and ports', () => {
    it('report a Service whose selector matches no pods', () => {
      const problems = broken((o) => ((get(o, 'Service').spec as { selector: Record<string, string> }).selector = { app: 'wbe' }));
      expect(problems).toEqual([expect.stringMatching(/Service ns\/web: selector .* matches no workload's pods/)]);
    });

    it('report a Service selecting pods in another namespace only', () => {
      expect(broken((o) => (get(o, 'Service').metadata.namespace = 'other'))).toContainEqual(expect.stringMatching(/matches no workload's pods/));
    });

    it('report a Service target port the pods do not have, by name or number', () => {
      expect(broken((o) => ((get(o, 'Service').spec as { ports: Array<{ targetPort: unknown }> }).ports[0]!.targetPort = 'metrics'))).toEqual([
        expect.stringMatching(/targetPort metrics is not a container port of Deployment ns\/web/),
      ]);
      expect(broken((o) => ((get(o, 'Service').spec as { ports: Array<{ targetPort: unknown }> }).ports[0]!.targetPort = 9090))).toEqual([
        expect.stringMatching(/targetPort 9090 is not a container port/),
      ]);
      // No targetPort: the port itself must be a container port.
      expect(broken((o) => delete (get(o, 'Service').spec as { ports: Array<{ targetPort?: unknown }> }).ports[0]!.targetPort)).toEqual([
        expect.stringMatching(/targetPort 80 is not a container port/),
      ]);
    });

    it('report a Deployment whose selector misses its own pod template', () => {
      const problems = broken((o) => ((get(o, 'Deployment').spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels = { app: 'web', tier: 'back' }));
      expect(problems).toContainEqual(expect.stringMatching(/spec.selector does not match its own pod template labels/));
    });

    it('report a PodDisruptionBudget that selects nothing', () => {
      const objects = fixture();
      objects.push(...parseManifests('apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: { name: web, namespace: ns }\nspec: { minAvailable: 1, selector: { matchLabels: { app: api } } }', 'pdb'));
      expect(checkSelectors(objects)).toEqual([expect.stringMatching(/PodDisruptionBudget ns\/web: selector matches no workload's pods/)]);
    });

    it('report probes on a port the container does not declare', () => {
      expect(broken((o) => (web(o).readinessProbe = { httpGet: { path: '/readyz', port: 'admin' } }))).toEqual([
        expect.stringMatching(/container web: readinessProbe port admin is not one of the container's ports/),
      ]);
      expect(broken((o) => (web(o).livenessProbe = { httpGet: { path: '/healthz', port: 8081 } }))).toEqual([expect.stringMatching(/livenessProbe port 8081/)]);
    });

    it('report a probe that names another container\'s port', () => {
      const problems = broken((o) => {
        pod(o).containers!.push({ name: 'side', image: 'example/side:1', ports: [{ name: 'side', containerPort: 9000 }], resources: { requests: { cpu: '10m', memory: '8Mi' } } });
        web(o).livenessProbe = { httpGet: { port: 'side' } };
      });
      expect(problems).toEqual([expect.stringMatching(/container web: livenessProbe port side/)]);
    });

    it('report a prometheus.io/port no container has', () => {
      expect(broken((o) => ((get(o, 'Deployment').spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations['prometheus.io/port'] = '9999'))).toEqual([
        expect.stringMatching(/prometheus.io\/port 9999 is not a container port/),
      ]);
    });
  });

  describe('pods', () => {
    it('report a container without cpu or memory requests', () => {
      expect(broken((o) => delete web(o).resources!.requests!.memory)).toEqual([expect.stringMatching(/container web: no memory request/)]);
      expect(broken((o) => delete web(o).resources)).toEqual(expect.arrayContaining([expect.stringMatching(/no cpu request/), expect.stringMatching(/no memory request/)]));
    });

    it('report a GPU whose request and limit differ, or without a limit', () => {
      expect(broken((o) => (web(o).resources!.limits!['nvidia.com/gpu'] = '2'))).toEqual([expect.stringMatching(/nvidia.com\/gpu request and limit differ/)]);
      expect(broken((o) => delete web(o).resources!.limits!['nvidia.com/gpu'])).toEqual([expect.stringMatching(/extended resource nvidia.com\/gpu needs a limit/)]);
    });

    it('report images without a tag or on latest', () => {
      expect(broken((o) => (web(o).image = 'example/web'))).toEqual([expect.stringMatching(/image example\/web is not pinned/)]);
      expect(broken((o) => (web(o).image = 'registry:5000/web:latest'))).toEqual([expect.stringMatching(/is not pinned/)]);
      expect(broken((o) => (web(o).image = 'registry:5000/web@sha256:abc'))).toEqual([]);
    });

    it('report bad and duplicate port names and mounts of undeclared volumes', () => {
      expect(checkPods(((o) => ((web(o).ports = [{ name: 'http-port-for-the-app', containerPort: 8080 }]), o))(fixture()))).toContainEqual(expect.stringMatching(/bad port name/));
      expect(broken((o) => web(o).ports!.push({ name: 'http', containerPort: 8081 }))).toContainEqual(expect.stringMatching(/duplicate container port names/));
      expect(broken((o) => web(o).volumeMounts!.push({ name: 'data', mountPath: '/data' }))).toEqual([expect.stringMatching(/mounts volume data, which the pod does not declare/)]);
    });
  });

  describe('references', () => {
    it('report a missing ConfigMap, Secret, Secret key and ServiceAccount', () => {
      expect(broken((o) => o.splice(o.indexOf(get(o, 'ConfigMap')), 1))).toEqual(
        expect.arrayContaining([expect.stringMatching(/volume config: ConfigMap cfg does not exist/), expect.stringMatching(/--config .*ConfigMap cfg does not exist/)]),
      );
      expect(broken((o) => o.splice(o.indexOf(get(o, 'Secret')), 1))).toEqual([expect.stringMatching(/env TOKEN: Secret creds does not exist/)]);
      expect(broken((o) => (web(o).env![0]!.valueFrom!.secretKeyRef!.key = 'PASSWORD'))).toEqual([expect.stringMatching(/Secret creds has no key PASSWORD/)]);
      expect(broken((o) => (pod(o).serviceAccountName = 'ghost'))).toEqual([expect.stringMatching(/ServiceAccount ghost does not exist/)]);
    });

    it('accept optional references to what is missing, and the default ServiceAccount', () => {
      expect(
        broken((o) => {
          web(o).env!.push({ name: 'HF', valueFrom: { secretKeyRef: { name: 'creds', key: 'HF', optional: true } } });
          web(o).envFrom = [{ secretRef: { name: 'extra', optional: true } }];
        }),
      ).toEqual([]);
      const objects = fixture();
      pod(objects).serviceAccountName = 'default';
      expect(checkReferences(objects)).toEqual([]);
    });

    it('report envFrom of a missing Secret or ConfigMap, and a projected key the ConfigMap lacks', () => {
      expect(broken((o) => (web(o).envFrom = [{ configMapRef: { name: 'env' } }, { secretRef: { name: 'more' } }]))).toEqual([
        expect.stringMatching(/envFrom: ConfigMap env does not exist/),
        expect.stringMatching(/envFrom: Secret more does not exist/),
      ]);
      expect(broken((o) => (pod(o).volumes![0]!.configMap!.items = [{ key: 'other.yaml', path: 'app.yaml' }]))).toEqual([
        expect.stringMatching(/volume config: ConfigMap cfg has no key other.yaml/),
        // and so the file the container reads is not there either
        expect.stringMatching(/--config \/etc\/app\/app.yaml: ConfigMap cfg has no key other.yaml/),
      ]);
    });

    it('report a --config file no mount provides', () => {
      const objects = fixture();
      web(objects).args = ['--config', '/etc/app/other.yaml'];
      expect(checkConfigFiles(objects)).toEqual([expect.stringMatching(/--config \/etc\/app\/other.yaml: ConfigMap cfg has no key other.yaml/)]);
      web(objects).args = ['--config=/srv/app.yaml'];
      expect(checkConfigFiles(objects)).toEqual([expect.stringMatching(/no ConfigMap or Secret volume .* provides it/)]);
    });
  });

  describe('RBAC', () => {
    const role = (o: K8sObject[]) => get(o, 'Role') as K8sObject & { rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }> };

    it('report wildcards in verbs, resources and apiGroups', () => {
      expect(broken((o) => (role(o).rules[0]!.verbs = ['*']))).toContainEqual(expect.stringMatching(/wildcard in verbs/));
      expect(broken((o) => (role(o).rules[0]!.resources = ['*']))).toContainEqual(expect.stringMatching(/wildcard in resources/));
      expect(broken((o) => (role(o).rules[0]!.apiGroups = ['*']))).toContainEqual(expect.stringMatching(/wildcard in apiGroups/));
    });

    it('report a verb or resource beyond the policy, and one the policy needs but is not granted', () => {
      expect(broken((o) => role(o).rules[0]!.verbs.push('update'))).toEqual(['ServiceAccount app: granted apps/deployments/scale:update, beyond what it needs']);
      expect(broken((o) => role(o).rules.push({ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }))).toEqual(['ServiceAccount app: granted /secrets:get, beyond what it needs']);
      expect(broken((o) => (role(o).rules[0]!.verbs = ['get']))).toEqual(['ServiceAccount app: lacks apps/deployments/scale:patch']);
      // Scaling the Deployment itself rather than its scale subresource is more than the policy allows.
      expect(broken((o) => (role(o).rules[0]!.resources = ['deployments']))).toEqual(expect.arrayContaining([expect.stringMatching(/granted apps\/deployments:get, beyond/)]));
    });

    it('report any ClusterRole or ClusterRoleBinding', () => {
      const problems = broken((o) =>
        o.push(...parseManifests('apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: { name: reader }\nrules: [{ apiGroups: [""], resources: ["pods"], verbs: ["list"] }]', 'cr')),
      );
      expect(problems).toContainEqual(expect.stringMatching(/ClusterRole reader: cluster-wide RBAC is not allowed/));
    });

    it('report bindings to a missing Role or ServiceAccount, or a subject in the wrong namespace', () => {
      expect(broken((o) => ((get(o, 'RoleBinding').roleRef as { name: string }).name = 'nope'))).toEqual(
        expect.arrayContaining([expect.stringMatching(/RoleBinding ns\/app: Role nope does not exist/), expect.stringMatching(/Role ns\/app: bound by no RoleBinding/)]),
      );
      expect(broken((o) => ((get(o, 'RoleBinding').subjects as Array<{ namespace: string }>)[0]!.namespace = 'default'))).toEqual(
        expect.arrayContaining([expect.stringMatching(/ServiceAccount default\/app does not exist/), 'ServiceAccount app: lacks apps/deployments/scale:get']),
      );
      expect(broken((o) => ((get(o, 'RoleBinding').roleRef as { kind: string }).kind = 'ClusterRole'))).toContainEqual(expect.stringMatching(/roleRef must be a Role/));
    });

    it('report resourceNames naming a workload that does not exist', () => {
      expect(broken((o) => (role(o).rules[0]!.resourceNames = ['engine']))).toEqual([expect.stringMatching(/resourceNames names Deployment engine, which does not exist/)]);
    });

    it('report a policy account that does not exist', () => {
      expect(checkRbac(fixture(), { ...POLICY, ghost: [] })).toEqual(['ServiceAccount ghost: named by the policy, does not exist']);
    });
  });

  describe('names and labels', () => {
    it('report label values the API server refuses, bad names and objects outside a created namespace', () => {
      expect(broken((o) => (get(o, 'Service').metadata.labels = { 'switchyard.io/models': 'a,b' }))).toEqual([expect.stringMatching(/bad value "a,b"/)]);
      expect(broken((o) => (get(o, 'Service').metadata.labels = { 'Bad_Prefix/x': 'y' }))).toEqual([expect.stringMatching(/bad prefix/)]);
      const objects = fixture();
      get(objects, 'ConfigMap').metadata.name = 'Cfg';
      get(objects, 'Secret').metadata.namespace = 'elsewhere';
      expect(checkObjects(objects)).toEqual([expect.stringMatching(/ConfigMap ns\/Cfg: bad name/), expect.stringMatching(/Secret elsewhere\/creds: namespace elsewhere is not created/)]);
    });

    it('report a wrong apiVersion', () => {
      expect(broken((o) => (get(o, 'Deployment').apiVersion = 'extensions/v1beta1'))).toEqual([expect.stringMatching(/apiVersion extensions\/v1beta1, expected apps\/v1/)]);
    });
  });
});

describe('the kustomize builder', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const write = (path: string, text: string) => {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  };
  const setup = () => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-kustomize-'));
    write('base/app.yaml', FIXTURE.replace(/namespace: ns/g, 'namespace: old'));
    write('base/kustomization.yaml', 'resources: [app.yaml]\nnamespace: ns\n');
  };

  it('applies namespace, images, replicas and JSON patches from an overlay over its base', () => {
    setup();
    write(
      'overlay/kustomization.yaml',
      `resources: [../base]
images:
  - { name: example/web, newName: reg.example/web, newTag: "2.0" }
replicas:
  - { name: web, count: 5 }
patches:
  - target: { kind: Deployment, name: web }
    patch: |-
      - op: add
        path: /spec/template/spec/nodeSelector
        value: { gpu: h100 }
`,
    );
    const { objects, files } = buildKustomization(join(dir, 'overlay'));
    const deployment = objects.find((o) => o.kind === 'Deployment')!;
    expect(deployment.metadata.namespace).toBe('ns');
    expect((deployment.spec as { replicas: number }).replicas).toBe(5);
    const spec = (deployment.spec as { template: { spec: PodSpec & { nodeSelector?: unknown } } }).template.spec;
    expect(spec.containers![0]!.image).toBe('reg.example/web:2.0');
    expect(spec.nodeSelector).toEqual({ gpu: 'h100' });
    expect(objects.find((o) => o.kind === 'Namespace')!.metadata.name).toBe('ns');
    // Subjects keep the namespace they name (kustomize moves only "default" ServiceAccounts), and the check sees it.
    expect((objects.find((o) => o.kind === 'RoleBinding')!.subjects as Array<{ namespace: string }>)[0]!.namespace).toBe('old');
    expect(checkRbac(objects, POLICY)).toContainEqual(expect.stringMatching(/ServiceAccount old\/app does not exist/));
    expect(files.map((f) => f.slice(dir.length))).toEqual(['/overlay/kustomization.yaml', '/base/kustomization.yaml', '/base/app.yaml']);
  });

  it('refuses what it cannot build the way kustomize would', () => {
    setup();
    write('a/kustomization.yaml', 'resources: [../base]\ncommonLabels: { a: b }\n');
    expect(() => buildKustomization(join(dir, 'a'))).toThrow(/"commonLabels" is not supported/);
    write('b/kustomization.yaml', 'resources: [../base, ../base/app.yaml]\n');
    expect(() => buildKustomization(join(dir, 'b'))).toThrow(/defined twice/);
    write('c/kustomization.yaml', 'resources: [../base]\npatches:\n  - target: { kind: Deployment, name: api }\n    patch: "[]"\n');
    expect(() => buildKustomization(join(dir, 'c'))).toThrow(/matches nothing/);
    write('d/kustomization.yaml', 'resources: [missing.yaml]\n');
    expect(() => buildKustomization(join(dir, 'd'))).toThrow(/does not exist/);
    write('e/kustomization.yaml', 'resources: [../base]\npatches:\n  - target: { kind: Deployment, name: web }\n    patch: |-\n      - { op: replace, path: /spec/nope/x, value: 1 }\n');
    expect(() => buildKustomization(join(dir, 'e'))).toThrow(/does not exist/);
  });

  it('refuses YAML that does not parse or is not an object', () => {
    expect(() => parseManifests('a: [1, 2', 'x.yaml')).toThrow(/x.yaml/);
    expect(() => parseManifests('- 1\n- 2\n', 'x.yaml')).toThrow(/not a mapping/);
    expect(() => parseManifests('kind: Service\nmetadata: {}\n', 'x.yaml')).toThrow(/lacks apiVersion/);
    expect(parseManifests('---\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: a }\n', 'x.yaml')).toHaveLength(1);
  });
});

describe('PromQL metric names', () => {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  let known: Set<string>;
  beforeAll(async () => {
    known = await knownMetricNames(root);
  });

  it('are read from expressions, leaving out functions, labels, ranges, strings and Grafana variables', () => {
    expect(metricNamesInPromQL('histogram_quantile(0.95, sum by (le, model) (rate(switchyard_time_to_first_token_seconds_bucket{model=~"$model"}[$__rate_interval])))')).toEqual([
      'switchyard_time_to_first_token_seconds_bucket',
    ]);
    expect(metricNamesInPromQL('sum(rate(a_total{kind="matched"}[5m])) / on (x) group_left sum(rate(b:c_total[1h] offset 5m)) > bool 0.5')).toEqual(['a_total', 'b:c_total']);
    expect(metricNamesInPromQL('max(vllm:kv_cache_usage_perc) by (pod) and up{job="x"} unless 1e3')).toEqual(['vllm:kv_cache_usage_perc', 'up']);
    expect(metricNamesInPromQL('label_replace(x, "dst", "$1", "src", "(.*)")')).toEqual(['x']);
  });

  it('are known from the registries and the sources, and a misspelt or invented one is reported', () => {
    for (const name of [
      'switchyard_requests_total',
      'switchyard_time_to_first_token_seconds_bucket',
      'switchyard_prefix_lookup_errors_total',
      'switchyard_kv_event_lag_seconds_count',
      'vllm:kv_cache_usage_perc',
      'vllm:time_to_first_token_seconds_bucket',
      'switchyard_autoscaler_desired_replicas',
      'switchyard_engine_kv_cache_usage',
    ]) {
      expect(known.has(name), name).toBe(true);
    }
    expect(known.has('switchyard_requests_total_bucket')).toBe(false);
    expect(unknownMetrics(['sum(rate(switchyard_request_total[5m]))', 'vllm:gpu_cache_usage_perc'], known)).toEqual([
      'unknown metric switchyard_request_total in: sum(rate(switchyard_request_total[5m]))',
      'unknown metric vllm:gpu_cache_usage_perc in: vllm:gpu_cache_usage_perc',
    ]);
  });

  it('are found in source by constructor and by typed helper', () => {
    const names = metricNamesInSource(`
      new Histogram({ name: 'x_seconds', help: 'h' });
      new Counter<'a'>({ name: 'y_total' });
      engineGauge('switchyard_engine_thing', 'h', f);
      histogram('vllm:lat_seconds', 'h', []);
      series('switchyard_engine_up', 'gauge', 'h', 1);
    `);
    expect([...names].sort()).toEqual(
      ['switchyard_engine_thing', 'switchyard_engine_up', 'vllm:lat_seconds', 'vllm:lat_seconds_bucket', 'vllm:lat_seconds_count', 'vllm:lat_seconds_sum', 'x_seconds', 'x_seconds_bucket', 'x_seconds_count', 'x_seconds_sum', 'y_total'].sort(),
    );
  });

  it('bracket checks catch an unclosed expression', () => {
    expect(bracketProblems('sum(rate(x[5m])')).toEqual(['unclosed ( in: sum(rate(x[5m])']);
    expect(bracketProblems('sum(x{a="("})')).toEqual([]);
    expect(bracketProblems('sum(x])')).toEqual(['unbalanced ] in: sum(x])']);
  });
});

describe('Grafana and Prometheus checks', () => {
  const known = new Set(['up', 'a_total']);
  const dashboard = () => ({
    title: 'T',
    uid: 't',
    schemaVersion: 39,
    templating: { list: [{ name: 'datasource', type: 'datasource' }] },
    panels: [
      { id: 1, type: 'row', title: 'R', gridPos: { h: 1, w: 24, x: 0, y: 0 }, panels: [] },
      { id: 2, type: 'timeseries', title: 'A', datasource: { uid: '${datasource}' }, gridPos: { h: 8, w: 12, x: 0, y: 1 }, targets: [{ refId: 'A', expr: 'rate(a_total[5m])' }] },
      { id: 3, type: 'timeseries', title: 'B', gridPos: { h: 8, w: 12, x: 12, y: 1 }, targets: [{ refId: 'A', expr: 'up' }] },
    ],
  });

  it('accept a sound dashboard and report each break', () => {
    expect(checkGrafanaDashboard(dashboard(), known)).toEqual([]);
    const d = dashboard();
    d.panels[2]!.gridPos = { h: 8, w: 12, x: 6, y: 4 };
    d.panels[1]!.targets![0]!.expr = 'rate(b_total[5m])';
    (d.panels[1] as { datasource: unknown }).datasource = { uid: '${ds}' };
    d.panels[2]!.targets!.push({ refId: 'A', expr: '' });
    d.schemaVersion = 16;
    expect(checkGrafanaDashboard(d, known)).toEqual([
      'dashboard: schemaVersion missing or older than 30',
      'A: uses ${ds}, which is not a dashboard variable',
      'B: overlaps A',
      'B: refIds missing or not unique',
      'B: a target without expr',
      'dashboard: unknown metric b_total in: rate(b_total[5m])',
    ]);
    const wide = dashboard();
    wide.panels[2]!.gridPos = { h: 8, w: 14, x: 12, y: 1 };
    expect(checkGrafanaDashboard(wide, known)).toEqual(['B: outside the 24-column grid']);
  });

  const objects = () => parseManifests(FIXTURE, 'fixture');
  const prom = (selector: string, port: string): PrometheusConfig =>
    parseYaml(`
scrape_configs:
  - job_name: web
    kubernetes_sd_configs:
      - role: pod
        namespaces: { names: [ns] }
        selectors: [{ role: pod, label: "${selector}" }]
    relabel_configs:
      - { source_labels: [__meta_kubernetes_pod_container_port_name], regex: ${port}, action: keep }
`) as PrometheusConfig;

  it('accept scrape jobs that find pods and their port, and report those that find neither', () => {
    expect(checkPrometheusConfig(prom('app=web', 'http'), objects(), ['web'])).toEqual([]);
    expect(checkPrometheusConfig(prom('app=api', 'http'), objects(), ['web'])).toEqual([expect.stringMatching(/selector app=api in namespaces \[ns\] finds no workload's pods/)]);
    expect(checkPrometheusConfig(prom('app=web', 'metrics'), objects(), ['web'])).toEqual([expect.stringMatching(/keeps port metrics, which Deployment ns\/web does not have/)]);
    expect(checkPrometheusConfig(prom('app=web', 'http'), objects(), ['web', 'autoscaler'])).toEqual(['prometheus: no job autoscaler']);
  });
});
