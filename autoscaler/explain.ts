/**
 * Decisions in words, for GET /explain as text/plain:
 *
 *   target llama: kv_cache_usage 0.82 per replica against target 0.6 over the 60 s stable window -> 3 replicas -> 5 (scale up)
 */

import type { Limit } from './algorithm.js';
import type { AlgorithmSpec, DecisionRecord, Explanation } from './autoscaler.js';

/** The last tick of a target in one line. */
export function summarize(name: string, algorithm: AlgorithmSpec, record: DecisionRecord | undefined): string {
  if (record === undefined) return `target ${name}: no decision yet`;
  const head = `target ${name}:`;
  if (record.reason === 'actuator_error') return `${head} ${record.error ?? 'the actuator failed'}; no decision`;
  const d = record.decision;
  if (d === undefined && record.desired !== undefined && record.current !== undefined && record.desired > record.current) {
    const failed = record.scaled ? '' : ` (not applied: ${record.error ?? 'unknown'})`;
    return `${head} ${record.current} ${record.current === 1 ? 'replica' : 'replicas'} below minReplicas, no metric to decide on -> ${record.desired} (scale up to minReplicas)${failed}`;
  }
  if (d === undefined) {
    const why = record.reason === 'no_data' ? 'no data' : 'metric source failed';
    return `${head} ${why} (${record.error ?? 'unknown'}); staying at ${record.current ?? '?'} replicas`;
  }
  if (d.reason === 'no_data') return `${head} no samples in the ${duration(d.windowMs)} window yet; staying at ${d.current} replicas`;
  let window = `the ${duration(d.windowMs)} ${d.window === 'apa' ? '' : `${d.window} `}window`;
  if ('panicking' in d && d.panicking && d.panicSince !== undefined) {
    window += record.at <= d.panicSince ? ' (panic mode, from this tick)' : ` (panic mode for ${duration(record.at - d.panicSince)})`;
  }
  let line = `${head} ${record.metric} ${num(d.perReplica)} per replica against target ${num(record.targetValue)} over ${window}`;
  if ('ratio' in d) line += `, ${percentFromTarget(d.ratio)}`;
  line += ` -> ${d.current} ${d.current === 1 ? 'replica' : 'replicas'} -> ${d.desired} (${outcome(record, algorithm)})`;
  if (record.error !== undefined) line += `; ${record.error}`;
  return line;
}

/** The whole explanation: one summary per target, then each target's recent replica changes. */
export function explainText(e: Explanation): string {
  const lines: string[] = [];
  for (const t of e.targets) lines.push(t.summary);
  for (const t of e.targets) {
    const changes = t.decisions.filter((r) => r.desired !== undefined && r.current !== undefined && r.desired !== r.current).slice(0, 10);
    if (changes.length === 0) continue;
    lines.push('', `target ${t.name}: recent changes (newest first)`);
    for (const r of changes) {
      lines.push(`  ${new Date(r.at).toISOString()}  ${r.current} -> ${r.desired}  ${r.reason}${r.scaled ? '' : ' (not applied)'}  ${r.metric} ${num(r.decision?.perReplica ?? NaN)} per replica`);
    }
  }
  return lines.join('\n') + '\n';
}

function outcome(record: DecisionRecord, algorithm: AlgorithmSpec): string {
  const d = record.decision!;
  const limits = d.limitedBy.map((l) => limitWords(l, algorithm, record)).filter((s) => s !== '');
  switch (d.reason) {
    case 'scale_up':
    case 'scale_down': {
      const verb = d.reason === 'scale_up' ? 'scale up' : 'scale down';
      const asked = d.recommended !== d.desired ? `; the load asks for ${d.recommended}` : '';
      return limits.length === 0 ? `${verb}${asked}` : `${verb}, limited by ${limits.join(', ')}${asked}`;
    }
    case 'steady':
      return 'steady';
    case 'within_tolerance':
      return `within tolerance; the load asks for ${d.recommended}`;
    case 'panic_hold':
      return `held: no scale-down while panicking; the load asks for ${d.recommended}`;
    case 'scale_down_delayed': {
      const delay = algorithm.options.scaleDownDelayMs;
      return `held by the ${duration(delay)} scale-down delay; the load asks for ${d.recommended}`;
    }
    case 'at_min':
      return `at minReplicas; the load asks for ${d.recommended}`;
    case 'at_max':
      return `at maxReplicas; the load asks for ${d.recommended}`;
    case 'no_data':
      return 'no data';
  }
}

function limitWords(limit: Limit, algorithm: AlgorithmSpec, record: DecisionRecord): string {
  const o = algorithm.options;
  switch (limit) {
    case 'max_scale_up_rate':
      return `max scale-up rate ${num(o.maxScaleUpRate)}x`;
    case 'max_scale_down_rate':
      return `max scale-down rate ${num(o.maxScaleDownRate)}x`;
    case 'panic':
      return 'panic mode (no scale-down)';
    case 'scale_down_delay':
      return `the ${duration(o.scaleDownDelayMs)} scale-down delay`;
    case 'min_replicas':
      return 'minReplicas';
    case 'max_replicas':
      return 'maxReplicas';
    case 'tolerance':
      return record.algorithm === 'apa' ? 'the tolerance band' : '';
  }
}

function percentFromTarget(ratio: number): string {
  const pct = Math.round((ratio - 1) * 100);
  if (pct === 0) return 'on target';
  return `${Math.abs(pct)} % ${pct > 0 ? 'above' : 'below'} target`;
}

/** 3 significant decimals at most: 0.82, 12.5, 3. */
export function num(x: number): string {
  if (!Number.isFinite(x)) return '?';
  return String(Math.round(x * 1000) / 1000);
}

/** 60 s, 1.5 s, 5 min, 2 h. */
export function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  const s = ms / 1_000;
  if (s < 120) return `${Math.round(s * 10) / 10} s`;
  const min = s / 60;
  if (min < 120) return `${Math.round(min * 10) / 10} min`;
  return `${Math.round((min / 60) * 10) / 10} h`;
}
