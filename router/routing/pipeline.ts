import type { EngineSnapshot } from '../../core/engine.js';
import { createFilter, createPicker, createScorer, type FilterName, type PluginContext } from './plugins.js';
import type { RequestFeatures, RoutingDecision, WeightedScorer } from './types.js';

export type PolicyName = 'random' | 'round-robin' | 'least-request' | 'least-kv-cache';

export interface RoutingConfig {
  /** A preset of scorers and picker; default least-request. */
  policy?: PolicyName;
  /** Filters run after the default ones (healthy, model, pool, exclude), which always run. */
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
};

/** Known policy names, for the config schema. */
export const POLICY_NAMES = Object.keys(PRESETS) as readonly PolicyName[];

// least-request needs nothing scraped and reacts to bursts at once: the safest default for any fleet.
const DEFAULT_POLICY: PolicyName = 'least-request';

/** Filters no configuration can remove: routing to a dead engine or one without the model is never right. */
const DEFAULT_FILTERS: readonly FilterName[] = ['healthy', 'model', 'pool', 'exclude'];

/**
 * Builds a routing pipeline: filters narrow the engines, weighted scorers score the candidates, a picker
 * chooses. Throws an Error naming any unknown policy or plugin, or an invalid weight.
 */
export function createPipeline(cfg: RoutingConfig, opts: { rng?: () => number } = {}): RoutingPipeline {
  const ctx: PluginContext = { rng: opts.rng ?? Math.random };
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
      return { engine, policy: name, candidates: candidates.length, score: scores[index] };
    },
  };
}
