import type { Filter } from '../types.js';

/**
 * Keeps the engines where the request's LoRA adapter is resident: an engine without it answers 404 (vLLM) or
 * would have to load it first, so it is never a candidate. Requests without an adapter pass unchanged. The
 * gateway loads a cold adapter before routing (router/adapters.ts), so this filter seldom leaves nothing.
 */
export const adapterFilter: Filter = {
  name: 'adapter',
  filter: (request, engines) => {
    const adapter = request.adapter;
    return adapter === undefined ? engines.slice() : engines.filter((e) => adapter.residentOn.has(e.spec.id));
  },
};
