import type { Filter } from '../types.js';

/** Keeps engines that serve the requested model. */
export const modelFilter: Filter = {
  name: 'model',
  filter: (request, engines) => engines.filter((e) => e.spec.models.includes(request.model)),
};
