import { adapterFilter } from './plugins/adapter.js';
import { aibrixPrefixCachePicker } from './plugins/aibrix-prefix-cache.js';
import { excludeFilter } from './plugins/exclude.js';
import { healthyFilter } from './plugins/healthy.js';
import { leastKvCacheScorer } from './plugins/least-kv-cache.js';
import { leastRequestScorer } from './plugins/least-request.js';
import { maxScorePicker } from './plugins/max-score.js';
import { modelFilter } from './plugins/model.js';
import { poolFilter } from './plugins/pool.js';
import { prefixCacheScorer } from './plugins/prefix-cache.js';
import { prefixCacheV1Scorer } from './plugins/prefix-cache-v1.js';
import { randomPicker } from './plugins/random.js';
import { roundRobinPicker } from './plugins/round-robin.js';
import { sessionScorer } from './plugins/session.js';
import { sglangCacheAwarePicker } from './plugins/sglang-cache-aware.js';
import { type EnginePerf, type EngineSnapshot, priorPerf } from '../../core/engine.js';
import type { Filter, Picker, Scorer } from './types.js';

/** Where a plugin gets an engine's figures: calibrated in the gateway and the replayer (router/placement/calibration.ts). */
export type PerfSource = (engine: EngineSnapshot) => EnginePerf;

/** What a plugin may know of an engine beyond its snapshot: the gateway's and the replayer's own models of it. */
export interface EngineSources {
  readonly perf: PerfSource;
  /** How full the prefix index believes the engine's cache is, 0 to 1 (PrefixIndex.fill). */
  readonly cacheFill: (engine: EngineSnapshot) => number;
}

/** What a plugin factory may use. Randomness is injected so tests and the replayer are deterministic. */
export interface PluginContext extends EngineSources {
  readonly rng: () => number;
}

/** Without an index, no engine's cache counts as full. */
export const noCacheFill = (): number => 0;

/** Without calibration: the engine's configured figures, else the H100 defaults. */
export const specPerf: PerfSource = (engine) => priorPerf(engine.spec);

// Factories, not instances: a picker may keep state (round-robin's cursor), and each pipeline owns its own.
const FILTERS = {
  healthy: () => healthyFilter,
  model: () => modelFilter,
  adapter: () => adapterFilter,
  pool: () => poolFilter,
  exclude: () => excludeFilter,
} satisfies Record<string, (ctx: PluginContext) => Filter>;

const SCORERS = {
  'least-request': () => leastRequestScorer,
  'least-kv-cache': () => leastKvCacheScorer,
  'prefix-cache': (ctx: PluginContext) => prefixCacheScorer(ctx),
  'prefix-cache-v1': () => prefixCacheV1Scorer,
  session: () => sessionScorer,
} satisfies Record<string, (ctx: PluginContext) => Scorer>;

const PICKERS = {
  'max-score': (ctx: PluginContext) => maxScorePicker(ctx.rng),
  random: (ctx: PluginContext) => randomPicker(ctx.rng),
  'round-robin': () => roundRobinPicker(),
  // Whole policies of peers, emulated for comparison: they ignore the scores and decide from the features.
  'aibrix-prefix-cache': (ctx: PluginContext) => aibrixPrefixCachePicker(ctx.rng),
  'sglang-cache-aware': (ctx: PluginContext) => sglangCacheAwarePicker(ctx.rng),
} satisfies Record<string, (ctx: PluginContext) => Picker>;

export type FilterName = keyof typeof FILTERS;
export type ScorerName = keyof typeof SCORERS;
export type PickerName = keyof typeof PICKERS;

/** Known plugin names, for the config schema. */
export const FILTER_NAMES = Object.keys(FILTERS) as readonly FilterName[];
export const SCORER_NAMES = Object.keys(SCORERS) as readonly ScorerName[];
export const PICKER_NAMES = Object.keys(PICKERS) as readonly PickerName[];

export function createFilter(name: string, ctx: PluginContext): Filter {
  return lookup('filter', FILTERS, name)(ctx);
}

export function createScorer(name: string, ctx: PluginContext): Scorer {
  return lookup('scorer', SCORERS, name)(ctx);
}

export function createPicker(name: string, ctx: PluginContext): Picker {
  return lookup('picker', PICKERS, name)(ctx);
}

function lookup<T>(
  kind: string,
  table: Readonly<Record<string, (ctx: PluginContext) => T>>,
  name: string,
): (ctx: PluginContext) => T {
  // hasOwn, not `in`: a name like "toString" must be unknown, not an inherited function.
  if (!Object.hasOwn(table, name)) {
    throw new Error(`unknown routing ${kind} "${name}"; known ${kind}s: ${Object.keys(table).join(', ')}`);
  }
  return table[name];
}
