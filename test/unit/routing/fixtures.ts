import type { EngineLoad, EngineSnapshot } from '../../../core/engine.js';
import type { RequestFeatures } from '../../../router/routing/types.js';

export function engine(
  id: string,
  opts: {
    healthy?: boolean;
    inFlight?: number;
    models?: string[];
    pool?: string;
    load?: Partial<EngineLoad>;
    pendingPrefillTokens?: number;
  } = {},
): EngineSnapshot {
  return {
    ...(opts.pendingPrefillTokens === undefined ? {} : { pendingPrefillTokens: opts.pendingPrefillTokens }),
    spec: {
      id,
      url: `http://${id}.engines.test:8000`,
      kind: 'vllm',
      models: opts.models ?? ['llama'],
      labels: opts.pool === undefined ? {} : { pool: opts.pool },
    },
    healthy: opts.healthy ?? true,
    inFlight: opts.inFlight ?? 0,
    load: opts.load === undefined ? undefined : { running: 0, waiting: 0, kvUsage: 0, scrapedAt: 1, ...opts.load },
  };
}

export function request(opts: Partial<RequestFeatures> = {}): RequestFeatures {
  return { model: 'llama', endpoint: 'chat', pools: undefined, exclude: new Set(), ...opts };
}

/** Prefix features: `totalBlocks` blocks, of which each engine holds the given leading count. */
export function prefix(totalBlocks: number, held: Record<string, number>): RequestFeatures['prefix'] {
  return { totalBlocks, matches: new Map(Object.entries(held)) };
}

/** A deterministic rng that returns the given values in turn, cycling. */
export function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length];
}

export const ids = (engines: readonly EngineSnapshot[]): string[] => engines.map((e) => e.spec.id);
