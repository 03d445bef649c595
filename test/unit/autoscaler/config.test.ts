import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../../core/config.js';
import { loadAutoscalerConfig } from '../../../autoscaler/config.js';
import { KPA_DEFAULTS } from '../../../autoscaler/kpa.js';
import { APA_DEFAULTS } from '../../../autoscaler/apa.js';
import { buildTargets } from '../../../autoscaler/targets.js';
import type { ScalingTarget } from '../../../autoscaler/autoscaler.js';
import { FakeActuator } from './fakes.js';
import { startTextServer, vllmText, type TextServer } from './text-server.js';

const dir = mkdtempSync(join(tmpdir(), 'autoscaler-config-'));
let n = 0;
function file(yaml: string): string {
  const path = join(dir, `c${n++}.yaml`);
  writeFileSync(path, yaml);
  return path;
}

const EXAMPLE = `
server: { host: 0.0.0.0, port: 9000 }
intervalMs: 1000
targets:
  - name: llama
    metric: kv_cache_usage
    targetValue: 0.6
    maxReplicas: 8
    source:
      type: scrape
      urls: [http://10.0.0.7:8000, http://10.0.0.8:8000/metrics]
    actuator: { kind: kubernetes, namespace: inference, name: llama-vllm }
  - name: qwen
    metric: promql
    targetValue: 4
    minReplicas: 2
    maxReplicas: 16
    algorithm: apa
    apa: { upTolerance: 0.05, scaleDownDelayMs: 120000 }
    source:
      type: prometheus
      url: http://prometheus.monitoring:9090
      query: sum(vllm:num_requests_waiting{model_name="qwen"})
    actuator: { kind: kubernetes, namespace: inference, resource: StatefulSet, name: qwen-sglang }
`;

function problems(yaml: string): string[] {
  try {
    loadAutoscalerConfig({ path: file(yaml), env: {} });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

const target = (extra: string) => `
targets:
  - name: t
    metric: kv_cache_usage
    targetValue: 0.6
    maxReplicas: 4
    source: { type: scrape, urls: [http://e:8000] }
    actuator: { kind: kubernetes, namespace: ns, name: d }
${extra}`;

let server: TextServer | undefined;
let built: ScalingTarget[] = [];
afterEach(async () => {
  for (const t of built) await t.source.close();
  built = [];
  await server?.close();
  server = undefined;
});

describe('loadAutoscalerConfig', () => {
  it('reads the example with defaults filled in', () => {
    const cfg = loadAutoscalerConfig({ path: file(EXAMPLE), env: {} });
    expect(cfg.server).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(cfg.intervalMs).toBe(1000);
    expect(cfg.decisionHistory).toBe(100);
    expect(cfg.targets[0]).toMatchObject({
      name: 'llama',
      minReplicas: 1,
      algorithm: 'kpa',
      source: { type: 'scrape', engineKind: 'auto', timeoutMs: 1000 },
      actuator: { kind: 'kubernetes', namespace: 'inference', resource: 'Deployment', name: 'llama-vllm' },
    });
    expect(cfg.targets[1]).toMatchObject({ algorithm: 'apa', source: { type: 'prometheus', aggregate: 'sum', timeoutMs: 2000 }, actuator: { resource: 'StatefulSet' } });
  });

  it('takes PORT, SWITCHYARD_HOST and SWITCHYARD_LOG_LEVEL from the environment', () => {
    const cfg = loadAutoscalerConfig({ path: file(EXAMPLE), env: { PORT: '7777', SWITCHYARD_HOST: '127.0.0.2', SWITCHYARD_LOG_LEVEL: 'warn' } });
    expect(cfg.server).toEqual({ host: '127.0.0.2', port: 7777 });
    expect(cfg.log.level).toBe('warn');
    expect(() => loadAutoscalerConfig({ path: file(EXAMPLE), env: { PORT: 'x' } })).toThrow(/server\.port \(from env PORT\)/);
  });

  it.each([
    ['no targets', 'intervalMs: 1000\n', /targets: /],
    ['an empty target list', 'targets: []\n', /targets: list at least one scaling target/],
    ['minReplicas above maxReplicas', target('    minReplicas: 9'), /targets\[0\]\.minReplicas: must be <= maxReplicas \(4\)/],
    ['minReplicas 0', target('    minReplicas: 0'), /targets\[0\]\.minReplicas: at least 1/],
    ['a KV target above 1', target('').replace('targetValue: 0.6', 'targetValue: 60'), /targets\[0\]\.targetValue: KV-cache usage is a 0..1 fraction/],
    ['promql with a scrape source', target('').replace('metric: kv_cache_usage', 'metric: promql'), /targets\[0\]\.source\.type: metric promql needs source type prometheus/],
    ['a prometheus source without a query', target('').replace('{ type: scrape, urls: [http://e:8000] }', '{ type: prometheus, url: http://p:9090 }'), /targets\[0\]\.source\.query/],
    ['apa options on a kpa target', target('    apa: { upTolerance: 0.2 }'), /targets\[0\]\.apa: apa options on a kpa target/],
    ['a panic window longer than the stable window', target('    kpa: { stableWindowMs: 10000, panicWindowMs: 20000 }'), /targets\[0\]\.kpa: kpa: panicWindowMs must be > 0 and <= stableWindowMs/],
    ['a scale-up rate of 1', target('    kpa: { maxScaleUpRate: 1 }'), /targets\[0\]\.kpa\.maxScaleUpRate: must be > 1/],
    ['an unknown option', target('    kpa: { panicWindow: 6000 }'), /targets\[0\]\.kpa: Unrecognized key: "panicWindow"/],
    ['an unknown actuator', target('').replace('kind: kubernetes, namespace: ns, name: d', 'kind: nomad, name: d'), /targets\[0\]\.actuator\.kind/],
    ['a bad URL', target('').replace('http://e:8000', 'e:8000'), /targets\[0\]\.source\.urls\[0\]: an http\(s\) URL/],
    ['a duplicate name', `${target('')}  - name: t\n    metric: running_requests\n    targetValue: 8\n    maxReplicas: 2\n    source: { type: scrape }\n    actuator: { kind: kubernetes, namespace: ns, name: d2 }\n`, /targets\[1\]\.name: duplicate target "t"/],
  ])('rejects %s', (_name, yaml, message) => {
    expect(problems(yaml).join('\n')).toMatch(message);
  });

  it('leaves the gateway loader as it was (same machinery, its own schema)', () => {
    const cfg = loadConfig({ path: file('server: { port: 9999 }\n'), env: { SWITCHYARD_LOG_LEVEL: 'debug' } });
    expect(cfg.server.port).toBe(9999);
    expect(cfg.log.level).toBe('debug');
    expect(() => loadConfig({ path: file('targets: []\n'), env: {} })).toThrow(/\(top level\): Unrecognized key: "targets"/);
  });
});

describe('buildTargets', () => {
  it('resolves each target\'s algorithm options and builds its source and actuator', async () => {
    server = await startTextServer({ '/metrics': { body: vllmText(0.3, 0, 0) } });
    const cfg = loadAutoscalerConfig({ path: file(EXAMPLE.replace('[http://10.0.0.7:8000, http://10.0.0.8:8000/metrics]', `[${server.url}]`)), env: {} });
    const actuators: string[] = [];
    built = buildTargets(cfg, {
      createActuator: (a) => {
        actuators.push(a.kind === 'kubernetes' ? `${a.namespace}/${a.resource}/${a.name}` : a.kind);
        return new FakeActuator(1);
      },
    });
    expect(actuators).toEqual(['inference/Deployment/llama-vllm', 'inference/StatefulSet/qwen-sglang']);
    expect(built[0]!.algorithm).toEqual({ kind: 'kpa', options: KPA_DEFAULTS });
    expect(built[1]!.algorithm).toEqual({ kind: 'apa', options: { ...APA_DEFAULTS, upTolerance: 0.05, scaleDownDelayMs: 120_000 } });
    expect(built[1]!.source.description).toBe('prometheus http://prometheus.monitoring:9090: sum of sum(vllm:num_requests_waiting{model_name="qwen"})');
    expect(await built[0]!.source.read()).toMatchObject({ value: 0.3, replicas: 1 });
  });

  it('scrapes the replicas an actuator lists when no URLs are configured, and refuses when it lists none', async () => {
    server = await startTextServer({ '/metrics': { body: vllmText(0.5, 0, 0) } });
    const cfg = loadAutoscalerConfig({ path: file(target('').replace('urls: [http://e:8000]', 'urls: []')), env: {} });
    const listing = Object.assign(new FakeActuator(1), { replicas: () => [{ url: server!.url }] });
    built = buildTargets(cfg, { createActuator: () => listing });
    expect(await built[0]!.source.read()).toMatchObject({ value: 0.5, replicas: 1 });
    expect(() => buildTargets(cfg, { createActuator: () => new FakeActuator(1) })).toThrow(/source\.urls is empty and the fake actuator does not list its replicas/);
  });
});
