import type { Filter } from '../types.js';

/** Drops engines that failed their probes or were ejected by passive health checking. */
export const healthyFilter: Filter = {
  name: 'healthy',
  filter: (_request, engines) => engines.filter((e) => e.healthy),
};
