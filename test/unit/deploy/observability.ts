import { DEFAULT_ENGINE_PERF } from '../../../core/engine.js';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { createKvEventMetrics } from '../../../kvcache/events/metrics.js';
import { createSimMetrics } from '../../../engine-sim/metrics.js';
import { TimingModel } from '../../../engine-sim/timing-model.js';
import { createGatewayMetrics } from '../../../router/metrics.js';
import { selectedWorkloads, containersOf, id, type Problems } from './checks.js';
import type { K8sObject } from './k8s-types.js';

/**
 * Checks of what watches the deployment: PromQL in the Grafana dashboard and the autoscaler config names only
 * metrics that exist, and the Prometheus scrape jobs find the pods the manifests run.
 */

// ---- metric names that exist -------------------------------------------------------------------------------------

/**
 * The autoscaler's series, as issue 6 specifies them (its metrics module is being written alongside these
 * manifests; the source scan below picks its names up too once it exists).
 */
export const AUTOSCALER_METRICS: ReadonlyArray<{ name: string; type: 'gauge' | 'counter' }> = [
  { name: 'switchyard_autoscaler_desired_replicas', type: 'gauge' },
  { name: 'switchyard_autoscaler_current_replicas', type: 'gauge' },
  { name: 'switchyard_autoscaler_metric_value', type: 'gauge' },
  { name: 'switchyard_autoscaler_decisions_total', type: 'counter' },
];

/** Series Prometheus makes itself for every target. */
const PROMETHEUS_SERIES = ['up', 'scrape_duration_seconds', 'scrape_samples_scraped'];

function addWithSuffixes(out: Set<string>, name: string, type: string): void {
  out.add(name);
  if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(name + s);
  if (type === 'summary') for (const s of ['_sum', '_count']) out.add(name + s);
}

function walkTs(dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => (e.isDirectory() ? walkTs(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/**
 * Metric names declared in source: `new Counter|Gauge|Histogram|Summary({ name: '...' })`, helpers whose name
 * says the type (engineGauge('...'), histogram('vllm:...')) and calls that pass the type after the name
 * (series('...', 'gauge', ...)). A histogram's _bucket/_sum/_count come with it.
 */
export function metricNamesInSource(text: string): Set<string> {
  const out = new Set<string>();
  const ctor = /new\s+(Counter|Gauge|Histogram|Summary)\s*(?:<[^>]*>)?\(\s*\{\s*name:\s*['"]([A-Za-z_:][A-Za-z0-9_:]*)['"]/g;
  for (const m of text.matchAll(ctor)) addWithSuffixes(out, m[2]!, m[1]!.toLowerCase());
  const helper = /\b\w*?(gauge|counter|histogram|summary)\w*\(\s*['"]((?:switchyard_|vllm:)[A-Za-z0-9_:]*)['"]/gi;
  for (const m of text.matchAll(helper)) addWithSuffixes(out, m[2]!, m[1]!.toLowerCase());
  // A name followed by its type, as text exposition writers take them: series('switchyard_engine_up', 'gauge', ...).
  const typed = /\(\s*['"]((?:switchyard_|vllm:)[A-Za-z0-9_:]*)['"]\s*,\s*['"](gauge|counter|histogram|summary)['"]/g;
  for (const m of text.matchAll(typed)) addWithSuffixes(out, m[1]!, m[2]!);
  return out;
}

/**
 * Every metric name Switchyard and its engines expose: the router's, KV events' and the simulated vLLM's
 * registries as their factories build them, names declared anywhere else in the sources (sidecar, autoscaler,
 * prefix tracker...), the autoscaler's contract and Prometheus' own series.
 */
export async function knownMetricNames(root: string): Promise<Set<string>> {
  const names = new Set<string>(PROMETHEUS_SERIES);
  const registry = new Registry();
  createGatewayMetrics(registry, { engines: () => [], queueLength: () => new Map(), adaptersResident: () => new Map(), perf: () => DEFAULT_ENGINE_PERF });
  createKvEventMetrics(registry);
  const sim = createSimMetrics({ modelName: 'm', timing: new TimingModel(), maxLoras: 4 });
  for (const r of [registry, sim.registry]) {
    for (const m of await r.getMetricsAsJSON()) addWithSuffixes(names, m.name, String(m.type));
  }
  for (const dir of ['router', 'core', 'kvcache', 'engine-sim', 'engine-sidecar', 'autoscaler', 'adapters-controller']) {
    for (const file of walkTs(join(root, dir))) for (const n of metricNamesInSource(readFileSync(file, 'utf8'))) names.add(n);
  }
  for (const m of AUTOSCALER_METRICS) addWithSuffixes(names, m.name, m.type);
  return names;
}

// ---- PromQL ------------------------------------------------------------------------------------------------------

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'atan2', 'start', 'end']);

/**
 * The metric names a PromQL expression selects (Grafana's $variables allowed). Not a parser: it removes strings,
 * label matchers, ranges and grouping labels, then takes the identifiers that are not called as functions.
 */
export function metricNamesInPromQL(expr: string): string[] {
  let s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ');
  if (/__name__/.test(s)) throw new Error(`selecting by __name__ is not checked: ${expr}`);
  s = s
    .replace(/\{[^{}]*\}/g, ' ')
    .replace(/\[[^\[\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)/g, ' ');
  const out: string[] = [];
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const before = s[m.index - 1] ?? ' ';
    if (/[0-9.]/.test(before)) continue; // 5m, 1e3, 0.5
    if (/^\s*\(/.test(s.slice(m.index + word.length))) continue; // a function or aggregation
    if (PROMQL_WORDS.has(word.toLowerCase())) continue;
    out.push(word);
  }
  return [...new Set(out)];
}

/** Metric names in `exprs` that `known` does not hold, with the expression they are in. */
export function unknownMetrics(exprs: readonly string[], known: ReadonlySet<string>): Problems {
  const out: Problems = [];
  for (const expr of exprs) {
    for (const name of metricNamesInPromQL(expr)) if (!known.has(name)) out.push(`unknown metric ${name} in: ${expr}`);
  }
  return out;
}

/** Open and close parentheses, brackets and braces pair up (promtool parses for real when it is installed). */
export function bracketProblems(expr: string): Problems {
  const stack: string[] = [];
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  const s = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  for (const ch of s) {
    if ('([{'.includes(ch)) stack.push(ch);
    else if (ch in pairs && stack.pop() !== pairs[ch]) return [`unbalanced ${ch} in: ${expr}`];
  }
  return stack.length > 0 ? [`unclosed ${stack.join('')} in: ${expr}`] : [];
}

// ---- Grafana -----------------------------------------------------------------------------------------------------

interface GrafanaTarget {
  expr?: unknown;
  refId?: unknown;
}
interface GrafanaPanel {
  id?: unknown;
  type?: unknown;
  title?: unknown;
  gridPos?: { h?: number; w?: number; x?: number; y?: number };
  targets?: GrafanaTarget[];
  panels?: GrafanaPanel[];
}
interface GrafanaDashboard {
  title?: unknown;
  uid?: unknown;
  schemaVersion?: unknown;
  panels?: GrafanaPanel[];
  templating?: { list?: Array<{ name?: string; type?: string; query?: unknown; definition?: unknown }> };
}

/** All panels, those inside rows included. */
export function grafanaPanels(d: GrafanaDashboard): GrafanaPanel[] {
  return (d.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Every PromQL expression of a dashboard: panel targets and label_values() of query variables. */
export function grafanaExprs(d: GrafanaDashboard): string[] {
  const exprs = grafanaPanels(d).flatMap((p) => (p.targets ?? []).map((t) => t.expr).filter((e): e is string => typeof e === 'string'));
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query;
    const m = q === undefined ? null : /^label_values\((.+),\s*[A-Za-z_]\w*\)$/.exec(q.trim());
    if (m !== null) exprs.push(m[1]!);
  }
  return exprs;
}

/**
 * A dashboard Grafana imports: title, uid, schemaVersion; panels with unique ids inside the 24-column grid and
 * overlapping none; every non-row panel queries something, each target with its own refId and an expression
 * whose metrics exist; `${var}` data sources declared as variables.
 */
export function checkGrafanaDashboard(d: GrafanaDashboard, known: ReadonlySet<string>): Problems {
  const out: Problems = [];
  if (typeof d.title !== 'string' || d.title === '') out.push('dashboard: no title');
  if (typeof d.uid !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(d.uid)) out.push('dashboard: bad uid');
  if (typeof d.schemaVersion !== 'number' || d.schemaVersion < 30) out.push('dashboard: schemaVersion missing or older than 30');
  const panels = grafanaPanels(d);
  if (panels.length === 0) out.push('dashboard: no panels');
  const ids = panels.map((p) => p.id);
  if (ids.some((i) => typeof i !== 'number') || new Set(ids).size !== ids.length) out.push('dashboard: panel ids missing or not unique');
  const variables = new Set((d.templating?.list ?? []).map((v) => v.name));
  const boxes: Array<{ title: string; x: number; y: number; w: number; h: number }> = [];
  for (const p of panels) {
    const title = typeof p.title === 'string' ? p.title : `panel ${String(p.id)}`;
    const g = p.gridPos;
    if (g === undefined || [g.h, g.w, g.x, g.y].some((n) => typeof n !== 'number')) out.push(`${title}: no gridPos`);
    else {
      if (g.x! < 0 || g.w! < 1 || g.x! + g.w! > 24) out.push(`${title}: outside the 24-column grid`);
      const box = { title, x: g.x!, y: g.y!, w: g.w!, h: g.h! };
      for (const b of boxes) {
        if (box.x < b.x + b.w && b.x < box.x + box.w && box.y < b.y + b.h && b.y < box.y + box.h) out.push(`${title}: overlaps ${b.title}`);
      }
      boxes.push(box);
    }
    if (p.type === 'row') continue;
    if (typeof p.type !== 'string') out.push(`${title}: no type`);
    const targets = p.targets ?? [];
    if (targets.length === 0) out.push(`${title}: no targets`);
    const refIds = targets.map((t) => t.refId);
    if (refIds.some((r) => typeof r !== 'string') || new Set(refIds).size !== refIds.length) out.push(`${title}: refIds missing or not unique`);
    for (const t of targets) {
      if (typeof t.expr !== 'string' || t.expr.trim() === '') out.push(`${title}: a target without expr`);
      else out.push(...bracketProblems(t.expr).map((e) => `${title}: ${e}`));
    }
    const ds = JSON.stringify([p, targets]).match(/\$\{(\w+)\}/g) ?? [];
    for (const ref of ds) if (!variables.has(ref.slice(2, -1))) out.push(`${title}: uses ${ref}, which is not a dashboard variable`);
  }
  out.push(...unknownMetrics(grafanaExprs(d), known).map((p) => `dashboard: ${p}`));
  return out;
}

// ---- Prometheus --------------------------------------------------------------------------------------------------

interface RelabelConfig {
  source_labels?: string[];
  regex?: string;
  action?: string;
}
interface ScrapeConfig {
  job_name?: string;
  static_configs?: Array<{ targets?: string[] }>;
  kubernetes_sd_configs?: Array<{ role?: string; namespaces?: { names?: string[] }; selectors?: Array<{ role?: string; label?: string }> }>;
  relabel_configs?: RelabelConfig[];
}
export interface PrometheusConfig {
  scrape_configs?: ScrapeConfig[];
}

function parseLabelSelector(s: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const part of s.split(',')) {
    const m = /^\s*([^=!\s]+)\s*==?\s*([^\s]*)\s*$/.exec(part);
    if (m === null) return undefined;
    out[m[1]!] = m[2]!;
  }
  return out;
}

function fullMatch(regex: string, value: string): boolean {
  return new RegExp(`^(?:${regex})$`).test(value);
}

/**
 * The expected jobs are there, and each Kubernetes pod job finds pods in these manifests: its namespace is theirs,
 * its label selector selects a workload's pods, and the container port name it keeps is a port of those pods.
 */
export function checkPrometheusConfig(config: PrometheusConfig, objects: readonly K8sObject[], expectedJobs: readonly string[]): Problems {
  const out: Problems = [];
  const jobs = config.scrape_configs ?? [];
  const names = jobs.map((j) => j.job_name);
  if (new Set(names).size !== names.length) out.push('prometheus: duplicate job names');
  for (const j of expectedJobs) if (!names.includes(j)) out.push(`prometheus: no job ${j}`);
  for (const job of jobs) {
    const at = `prometheus job ${job.job_name}`;
    if (job.kubernetes_sd_configs === undefined && job.static_configs === undefined) out.push(`${at}: neither kubernetes_sd_configs nor static_configs`);
    for (const sd of job.kubernetes_sd_configs ?? []) {
      if (sd.role !== 'pod') {
        out.push(`${at}: role ${sd.role}, expected pod`);
        continue;
      }
      const namespaces = sd.namespaces?.names ?? [];
      const selectors = (sd.selectors ?? []).filter((s) => s.role === 'pod' && s.label !== undefined);
      if (selectors.length === 0) out.push(`${at}: no pod label selector`);
      for (const sel of selectors) {
        const labels = parseLabelSelector(sel.label!);
        if (labels === undefined) {
          out.push(`${at}: cannot read selector ${sel.label}`);
          continue;
        }
        const pods = namespaces.flatMap((ns) => selectedWorkloads(objects, ns, labels));
        if (pods.length === 0) {
          out.push(`${at}: selector ${sel.label} in namespaces [${namespaces.join(', ')}] finds no workload's pods`);
          continue;
        }
        const keepPort = (job.relabel_configs ?? []).find(
          (r) => (r.action ?? 'replace') === 'keep' && r.source_labels?.length === 1 && r.source_labels[0] === '__meta_kubernetes_pod_container_port_name',
        );
        if (keepPort === undefined) {
          out.push(`${at}: keeps every container port (no keep on __meta_kubernetes_pod_container_port_name)`);
          continue;
        }
        for (const w of pods) {
          const ports = containersOf(w.pod).flatMap((c) => (c.ports ?? []).map((p) => p.name ?? ''));
          if (!ports.some((p) => fullMatch(keepPort.regex ?? '(.*)', p))) out.push(`${at}: keeps port ${keepPort.regex}, which ${id(w.object)} does not have`);
        }
      }
    }
  }
  return out;
}
