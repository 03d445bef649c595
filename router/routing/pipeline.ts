import type { EngineSnapshot } from '../../core/engine.js';
import { createFilter, createPicker, createScorer, type EngineSources, type FilterName, noCacheFill, type PluginContext, specPerf } from './plugins.js';
import type { RequestFeatures, RoutingDecision, WeightedScorer } from './types.js';

export type PolicyName =
  | 'random'
  | 'round-robin'
  | 'least-request'
  | 'least-kv-cache'
  | 'prefix-cache'
  | 'prefix-cache-v1'
  | 'aibrix-prefix-cache'
  | 'sglang-cache-aware';

export interface RoutingConfig {
  /** A preset of scorers and picker; default prefix-cache. */
  policy?: PolicyName;
  /** Filters run after the default ones (healthy, model, adapter, pool, exclude), which always run. */
  filters?: string[];
  /** Replace the preset's scorers. */
  scorers?: { name: string; weight: number }[];
  /** Replaces the preset's picker. */
  picker?: string;
}

export interface RoutingPipeline {
  /** The policy name for metrics and traces: the preset's, or a description of the explicit scorers and picker. */
  readonly name: string;
  /** Undefined when no engine passes the filters. */
  route(request: RequestFeatures, engines: readonly EngineSnapshot[]): RoutingDecision | undefined;
}

interface Preset {
  readonly scorers: readonly { name: string; weight: number }[];
  readonly picker: string;
}

const PRESETS: Readonly<Record<PolicyName, Preset>> = {
  random: { scorers: [], picker: 'random' },
  'round-robin': { scorers: [], picker: 'round-robin' },
  'least-request': { scorers: [{ name: 'least-request', weight: 1 }], picker: 'max-score' },
  'least-kv-cache': { scorers: [{ name: 'least-kv-cache', weight: 1 }], picker: 'max-score' },
  // One scorer: the predicted cost in time of each placement (router/routing/plugins/prefix-cache.ts). Load,
  // prefix hits, sessions and the engines' speeds all enter it as time, so no other scorer needs to balance it.
  'prefix-cache': { scorers: [{ name: 'prefix-cache', weight: 1 }], picker: 'max-score' },
  // The default before the latency model, kept for comparison: queued work plus LOCALITY x the share of the prompt
  // missing, in prompts (prefix-cache-v1.ts); a session's engine weighs half as much; least-request splits near-ties.
  'prefix-cache-v1': {
    scorers: [
      { name: 'session', weight: 2 },
      { name: 'prefix-cache-v1', weight: 4 },
      { name: 'least-request', weight: 0.1 },
    ],
    picker: 'max-score',
  },
  // Peers' policies, emulated for comparison in the replayer; see their pickers' files.
  'aibrix-prefix-cache': { scorers: [], picker: 'aibrix-prefix-cache' },
  'sglang-cache-aware': { scorers: [], picker: 'sglang-cache-aware' },
};

/** Known policy names, for the config schema. */
export const POLICY_NAMES = Object.keys(PRESETS) as readonly PolicyName[];

// Without prefix features (the gateway did not compute them) prefix-cache still predicts each engine's latency from
// the gateway's own exact counts of its work: nothing scraped needed, reacts to bursts at once.
const DEFAULT_POLICY: PolicyName = 'prefix-cache';

/** Filters no configuration can remove: routing to a dead engine or one without the model is never right. */
const DEFAULT_FILTERS: readonly FilterName[] = ['healthy', 'model', 'adapter', 'pool', 'exclude'];

/**
 * Builds a routing pipeline: filters narrow the engines, weighted scorers score the candidates, a picker
 * chooses. Throws an Error naming any unknown policy or plugin, or an invalid weight.
 */
export function createPipeline(cfg: RoutingConfig, opts: { rng?: () => number } & Partial<EngineSources> = {}): RoutingPipeline {
  const ctx: PluginContext = { rng: opts.rng ?? Math.random, perf: opts.perf ?? specPerf, cacheFill: opts.cacheFill ?? noCacheFill };
  const policy = cfg.policy ?? DEFAULT_POLICY;
  if (!Object.hasOwn(PRESETS, policy)) {
    throw new Error(`unknown routing policy "${policy}"; known policies: ${POLICY_NAMES.join(', ')}`);
  }
  const preset = PRESETS[policy];

  const filterNames: string[] = [...DEFAULT_FILTERS];
  for (const name of cfg.filters ?? []) if (!filterNames.includes(name)) filterNames.push(name);
  const filters = filterNames.map((name) => createFilter(name, ctx));

  const scorerConfig = cfg.scorers ?? preset.scorers;
  let totalWeight = 0;
  const scorers: WeightedScorer[] = scorerConfig.map(({ name, weight }) => {
    if (!(Number.isFinite(weight) && weight >= 0)) {
      throw new Error(`routing scorer "${name}": weight must be a finite number >= 0, got ${weight}`);
    }
    totalWeight += weight;
    return { scorer: createScorer(name, ctx), weight };
  });
  const picker = createPicker(cfg.picker ?? preset.picker, ctx);

  const name =
    cfg.scorers === undefined && cfg.picker === undefined
      ? policy
      : `${picker.name}(${scorers.map((s) => `${s.scorer.name}*${s.weight}`).join(',')})`;

  return {
    name,
    route(request, engines) {
      let candidates = engines;
      for (const filter of filters) {
        candidates = filter.filter(request, candidates);
        if (candidates.length === 0) return undefined;
      }
      // Weighted mean of the scorers, so the decision's score stays in [0, 1] whatever the weights.
      const scores = new Array<number>(candidates.length).fill(0);
      for (const { scorer, weight } of scorers) {
        if (weight === 0) continue;
        const share = weight / totalWeight;
        const partial = scorer.score(request, candidates);
        for (let i = 0; i < scores.length; i++) scores[i] += share * partial[i];
      }
      const engine = picker.pick(request, candidates, scores);
      const index = candidates.indexOf(engine);
      if (index === -1) throw new Error(`routing picker "${picker.name}" returned an engine that is not a candidate`);
      let reason = picker.explain?.(request, candidates, engine);
      for (let i = 0; reason === undefined && i < scorers.length; i++) {
        if (scorers[i].weight > 0) reason = scorers[i].scorer.explain?.(request, candidates, engine);
      }
      const decision: RoutingDecision = { engine, policy: name, candidates: candidates.length, score: scores[index] };
      return reason === undefined ? decision : { ...decision, reason };
    },
  };
}
