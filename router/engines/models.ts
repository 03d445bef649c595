import type { EngineSnapshot } from '../../core/engine.js';

/**
 * The models a client can use right now: the union of what healthy engines serve, sorted so /v1/models is
 * stable between calls. A pure function of snapshots, like routing, so it agrees with what routing can reach.
 */
export function servedModels(engines: readonly EngineSnapshot[]): string[] {
  const models = new Set<string>();
  for (const engine of engines) {
    if (!engine.healthy) continue;
    for (const model of engine.spec.models) models.add(model);
  }
  return [...models].sort();
}
