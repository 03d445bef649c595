import { Registry, collectDefaultMetrics } from 'prom-client';

/**
 * One registry per server instance rather than prom-client's global one: tests and `switchyard dev` run
 * several servers in one process, and each must expose only its own series.
 */
export function createMetricsRegistry(opts: { processMetrics: boolean }): Registry {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  return registry;
}
