import type { Filter } from '../types.js';

/** Drops engines this request was already tried on, so a retry goes elsewhere. */
export const excludeFilter: Filter = {
  name: 'exclude',
  filter: (request, engines) =>
    request.exclude.size === 0 ? engines.slice() : engines.filter((e) => !request.exclude.has(e.spec.id)),
};
