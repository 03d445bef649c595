import type { TimingParams } from '../../engine-sim/timing-model.js';
import type { IndexHashing, LoadSignal } from './simulate.js';
import type { PolicySummary } from './summary.js';

/** Everything a replay produced: written as report.json, rendered as the table and report.html. */
export interface ReplayReport {
  readonly trace: string;
  readonly engines: number;
  readonly rateScale: number;
  readonly loadSignal: LoadSignal;
  readonly hashing: IndexHashing;
  readonly requests: number;
  readonly timing: Readonly<TimingParams>;
  /** Hit ratio of one LRU cache with all engines' capacity together (perfect partitioning). */
  readonly referenceHitRatio: number;
  readonly generatedAt: string;
  readonly policies: readonly PolicyReport[];
  /** Set for closed-loop workloads, whose arrivals follow the users rather than a rate. */
  readonly closedLoop?: { readonly users: number; readonly thinkMs: number };
}

export interface PolicyReport {
  readonly summary: PolicySummary;
  /** Wall-clock time the simulation of this policy took. */
  readonly wallMs: number;
  /** (TTFT ms, fraction of requests at or below it). */
  readonly ttftCdf: readonly (readonly [number, number])[];
  /** In-flight requests per engine over virtual time: inFlight[engine][sample]. */
  readonly load: {
    readonly atMs: readonly number[];
    readonly inFlight: readonly (readonly number[])[];
    /** Decode batch size per engine over virtual time: batch[engine][sample]. */
    readonly batch: readonly (readonly number[])[];
  };
}

const s = (ms: number) => (Number.isNaN(ms) ? '-' : (ms / 1000).toFixed(2));
const ms1 = (ms: number) => (Number.isNaN(ms) ? '-' : ms.toFixed(1));
// TTFTs run from a few ms (a cached prompt on an idle engine) to tens of seconds (a long queue): ms keep both exact.
const msTtft = (ms: number) => (Number.isNaN(ms) ? '-' : ms.toFixed(ms < 100 ? 1 : 0));
const pct = (x: number) => (Number.isNaN(x) ? '-' : `${(100 * x).toFixed(1)}%`);
const signedPct = (x: number) => (x > 0 ? `+${pct(x)}` : pct(x));

function describeWorkload(report: ReplayReport): string {
  const { closedLoop } = report;
  return closedLoop === undefined
    ? `rate x${report.rateScale}`
    : `closed loop: ${closedLoop.users} users, think time ${closedLoop.thinkMs.toLocaleString('en-US')} ms mean`;
}

/** Columns padded to their widest cell: the first left-aligned, numbers right-aligned. */
function columns(header: readonly string[], rows: readonly string[][]): string[] {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: readonly string[]) => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

/** The terminal table: one row per policy and the reference line, then the prediction errors per policy. */
export function formatTable(report: ReplayReport): string {
  const latency = columns(
    ['policy', 'TTFT p50 ms', 'p99 ms', 'TPOT p50 ms', 'p99 ms', 'E2E p50 s', 'p99 s', 'hit', 'hit/ref', 'load max', 'mean', 'req/s', 'sim s'],
    report.policies.map(({ summary: p, wallMs }) => [
      p.policy,
      msTtft(p.ttftMs.p50),
      msTtft(p.ttftMs.p99),
      ms1(p.tpotMs.p50),
      ms1(p.tpotMs.p99),
      s(p.e2eMs.p50),
      s(p.e2eMs.p99),
      pct(p.hitRatio),
      report.referenceHitRatio > 0 ? pct(p.hitRatio / report.referenceHitRatio) : '-',
      p.load.max.toFixed(1),
      p.load.mean.toFixed(1),
      p.requestsPerSecond.toFixed(2),
      (wallMs / 1000).toFixed(1),
    ]),
  );
  const prediction = columns(
    ['policy', 'TTFT error p50', 'p90', 'bias', 'E2E error p50', 'p90', 'bias'],
    report.policies.map(({ summary: { policy, prediction: { ttft, e2e } } }) => [
      policy,
      pct(ttft.median),
      pct(ttft.p90),
      signedPct(ttft.bias),
      pct(e2e.median),
      pct(e2e.p90),
      signedPct(e2e.bias),
    ]),
  );
  return [
    `${report.requests} requests from ${report.trace}, ${report.engines} engines, ${describeWorkload(report)}, load signal ${report.loadSignal}, ${report.hashing} hashing`,
    ...latency,
    `reference: one LRU cache of ${report.engines} x ${report.timing.kvCapacityTokens.toLocaleString('en-US')} tokens (perfect partitioning) hits ${pct(report.referenceHitRatio)}`,
    'load = requests in flight per engine, averaged over the run (busiest engine, mean of engines); sim s = wall-clock time of the simulation',
    '',
    'prediction of the chosen engine at routing time against the outcome: |predicted - observed| / observed, and bias = mean of (predicted - observed) / observed',
    ...prediction,
  ].join('\n');
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const W = 640;
const H = 320;
const M = { left: 56, right: 16, top: 16, bottom: 40 };

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function polyline(points: readonly (readonly [number, number])[], x: (v: number) => number, y: (v: number) => number, color: string): string {
  const d = points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ');
  return `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${d}"/>`;
}

function frame(title: string, body: string, xLabel: string, yLabel: string, legend: readonly { name: string; color: string }[]): string {
  const items = legend
    .map((l, i) => `<g transform="translate(${M.left + 8},${M.top + 8 + i * 16})"><rect width="10" height="10" fill="${l.color}"/><text x="14" y="9">${esc(l.name)}</text></g>`)
    .join('');
  return `<figure><figcaption>${esc(title)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-size="11" font-family="sans-serif">
<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#999"/>
${body}
<text x="${(M.left + W - M.right) / 2}" y="${H - 6}" text-anchor="middle">${esc(xLabel)}</text>
<text transform="translate(14,${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>
${items}</svg></figure>`;
}

function ticks(values: readonly number[], pos: (v: number) => number, axis: 'x' | 'y', label: (v: number) => string): string {
  return values
    .map((v) => {
      const p = pos(v).toFixed(1);
      return axis === 'x'
        ? `<line x1="${p}" x2="${p}" y1="${M.top}" y2="${H - M.bottom}" stroke="#eee"/><text x="${p}" y="${H - M.bottom + 14}" text-anchor="middle">${label(v)}</text>`
        : `<line x1="${M.left}" x2="${W - M.right}" y1="${p}" y2="${p}" stroke="#eee"/><text x="${M.left - 4}" y="${p}" text-anchor="end" dominant-baseline="middle">${label(v)}</text>`;
    })
    .join('');
}

function ttftCdfChart(report: ReplayReport): string {
  let lo = Infinity;
  let hi = 0;
  for (const p of report.policies) {
    for (const [t] of p.ttftCdf) {
      if (t > 0) lo = Math.min(lo, t);
      hi = Math.max(hi, t);
    }
  }
  if (!(hi > 0)) return '';
  // TTFTs span orders of magnitude (a cached prompt vs a queued one): a log axis keeps both ends readable.
  const a = Math.floor(Math.log10(lo));
  const b = Math.max(a + 1, Math.ceil(Math.log10(hi)));
  const x = (v: number) => M.left + ((Math.log10(Math.max(v, 10 ** a)) - a) / (b - a)) * (W - M.left - M.right);
  const y = (f: number) => H - M.bottom - f * (H - M.top - M.bottom);
  const decades = Array.from({ length: b - a + 1 }, (_, i) => 10 ** (a + i));
  const body =
    ticks(decades, x, 'x', (v) => (v >= 1000 ? `${v / 1000} s` : `${v} ms`)) +
    ticks([0, 0.25, 0.5, 0.75, 1], y, 'y', (f) => f.toFixed(2)) +
    report.policies.map((p, i) => polyline(p.ttftCdf, x, y, COLORS[i % COLORS.length])).join('');
  const legend = report.policies.map((p, i) => ({ name: p.summary.policy, color: COLORS[i % COLORS.length] }));
  return frame('TTFT, cumulative distribution', body, 'time to first token (log scale)', 'fraction of requests', legend);
}

function hitRatioChart(report: ReplayReport): string {
  const count = report.policies.length;
  const band = (W - M.left - M.right) / Math.max(1, count);
  // Hit ratios are often a few tens of percent: scale to the largest (and the reference) rather than to 100%.
  let top = report.referenceHitRatio;
  for (const p of report.policies) top = Math.max(top, p.summary.hitRatio);
  const yMax = Math.min(1, Math.max(0.2, Math.ceil((top * 1.2) / 0.2) * 0.2));
  const y = (f: number) => H - M.bottom - (f / yMax) * (H - M.top - M.bottom);
  const bars = report.policies
    .map((p, i) => {
      const x0 = M.left + i * band + band * 0.15;
      const barTop = y(p.summary.hitRatio);
      return `<rect x="${x0.toFixed(1)}" y="${barTop.toFixed(1)}" width="${(band * 0.7).toFixed(1)}" height="${(H - M.bottom - barTop).toFixed(1)}" fill="${COLORS[i % COLORS.length]}"/>
<text x="${(x0 + band * 0.35).toFixed(1)}" y="${(barTop + 14).toFixed(1)}" text-anchor="middle" fill="#fff">${pct(p.summary.hitRatio)}</text>
<text x="${(x0 + band * 0.35).toFixed(1)}" y="${H - M.bottom + 14}" text-anchor="middle">${esc(p.summary.policy)}</text>`;
    })
    .join('');
  const ref = y(report.referenceHitRatio).toFixed(1);
  const steps = [0, 0.25, 0.5, 0.75, 1].map((f) => f * yMax);
  const body =
    ticks(steps, y, 'y', (f) => `${Math.round(f * 100)}%`) +
    bars +
    `<line x1="${M.left}" x2="${W - M.right}" y1="${ref}" y2="${ref}" stroke="#000" stroke-dasharray="6 4"/>`;
  const legend = [{ name: `dashed: perfect partitioning, ${pct(report.referenceHitRatio)}`, color: '#000' }];
  return frame('Token prefix-hit ratio per policy', body, 'policy', 'cached prompt tokens / prompt tokens', legend);
}

/** One line per engine over virtual time: `series[engine][sample]` at `p.load.atMs`. */
function perEngineChart(p: PolicyReport, series: readonly (readonly number[])[], title: string, yLabel: string): string {
  const { atMs } = p.load;
  if (atMs.length === 0) return '';
  const t0 = atMs[0];
  const t1 = Math.max(t0 + 1, atMs[atMs.length - 1]);
  let peak = 1;
  for (const values of series) for (const v of values) peak = Math.max(peak, v);
  const x = (t: number) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v: number) => H - M.bottom - (v / peak) * (H - M.top - M.bottom);
  const secondsStep = niceStep((t1 - t0) / 1000 / 6);
  const xs: number[] = [];
  for (let v = 0; t0 + v * 1000 <= t1; v += secondsStep) xs.push(t0 + v * 1000);
  const yStep = niceStep(peak / 5);
  const ys: number[] = [];
  for (let v = 0; v <= peak; v += yStep) ys.push(v);
  const body =
    ticks(xs, x, 'x', (t) => `${Math.round((t - t0) / 1000)} s`) +
    ticks(ys, y, 'y', (v) => String(v)) +
    series.map((values, e) => polyline(peaks(atMs, values, W - M.left - M.right), x, y, COLORS[e % COLORS.length])).join('');
  const legend = series.map((_, e) => ({ name: `engine-${e}`, color: COLORS[e % COLORS.length] }));
  return frame(`${p.summary.policy}: ${title}`, body, 'virtual time since the first arrival', yLabel, legend.length <= 8 ? legend : []);
}

/**
 * At most `points` (time, value) pairs: a plot is only so many pixels wide, and a long closed loop samples tens of
 * thousands of times. Each pair is the highest value of its run of samples, so a brief pile-up still shows.
 */
function peaks(atMs: readonly number[], values: readonly number[], points: number): [number, number][] {
  const per = Math.max(1, Math.ceil(values.length / points));
  const out: [number, number][] = [];
  for (let i = 0; i < values.length; i += per) {
    let top = values[i];
    for (let k = i + 1; k < Math.min(values.length, i + per); k++) top = Math.max(top, values[k]);
    out.push([atMs[i], top]);
  }
  return out;
}

function niceStep(raw: number): number {
  if (!(raw > 0)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** A self-contained HTML page: the table, the plots as inline SVG, no scripts and nothing fetched. */
export function renderHtml(report: ReplayReport): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Switchyard replay: ${esc(report.trace)}</title>
<style>body{font-family:sans-serif;margin:24px;max-width:1100px}pre{background:#f6f6f6;padding:12px;overflow-x:auto}figure{margin:16px 0}figcaption{font-weight:bold;margin-bottom:4px}</style>
</head><body>
<h1>Trace replay</h1>
<p>${esc(`${report.requests} requests from ${report.trace} on ${report.engines} simulated engines (engine-sim timing model), ${describeWorkload(report)}, generated ${report.generatedAt}.`)}</p>
<pre>${esc(formatTable(report))}</pre>
${ttftCdfChart(report)}
${hitRatioChart(report)}
<h2>Requests in flight per engine</h2>
${report.policies.map((p) => perEngineChart(p, p.load.inFlight, 'requests in flight per engine', 'requests in flight')).join('\n')}
<h2>Batch size per engine</h2>
${report.policies.map((p) => perEngineChart(p, p.load.batch, 'batch size per engine (requests in its running step)', 'requests in the step')).join('\n')}
<h2>Routing decisions by reason</h2>
<pre>${esc(report.policies.map((p) => `${p.summary.policy}: ${Object.entries(p.summary.reasons).map(([r, c]) => `${r} ${c}`).join(', ')}`).join('\n'))}</pre>
</body></html>
`;
}
