import type { Filter } from '../types.js';

/**
 * When the request is restricted to compute pools, keeps engines whose `pool` label is one of them; an engine
 * without a `pool` label belongs to no pool and is dropped. Unrestricted requests keep every engine.
 */
export const poolFilter: Filter = {
  name: 'pool',
  filter: (request, engines) => {
    const pools = request.pools;
    if (pools === undefined) return engines.slice();
    return engines.filter((e) => {
      const pool = e.spec.labels['pool'];
      return pool !== undefined && pools.includes(pool);
    });
  },
};
