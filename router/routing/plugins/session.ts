import type { EngineSnapshot } from '../../../core/engine.js';
import type { RequestFeatures, Scorer } from '../types.js';
import { lastCall } from './common.js';
import { LOCALITY } from './prefix-cache-v1.js';
import { queuedWork } from './queued-work.js';

/**
 * The session's engine is overloaded, and loses its pull, when more work is queued on it than on the idlest
 * candidate by this many prompts like the request's (queued-work.ts: pending prefill tokens, else requests in
 * flight): the prefix-cache scorer's value of a whole prompt's locality, since a session's engine holds the
 * conversation so far, which is most of the prompt.
 */
export const SESSION_OVERLOAD = LOCALITY;

// Remembered for explain(), which follows score() in the same decision.
const sessionIndex = lastCall((request: RequestFeatures, engines: readonly EngineSnapshot[]): { at: number; overloaded: boolean } => {
  const at = request.sessionEngine === undefined ? -1 : engines.findIndex((e) => e.spec.id === request.sessionEngine);
  if (at === -1) return { at, overloaded: false };
  const load = queuedWork(request, engines);
  return { at, overloaded: load[at] - Math.min(...load) > SESSION_OVERLOAD };
});

/**
 * A request whose session was last served by an engine (request.sessionEngine, resolved by the gateway from the
 * `x-session-id` header or the OpenAI `user` field) scores 1 on that engine and 0 elsewhere, so the turns of a
 * conversation land where their KV cache is even when the prefix index knows nothing (the router restarted, or
 * the session is new to this replica). No pull when the engine is gone (not a candidate: unhealthy, removed,
 * excluded by a retry) or overloaded (SESSION_OVERLOAD); then every candidate scores 0 and the other scorers
 * decide.
 */
export const sessionScorer: Scorer = {
  name: 'session',
  score: (request, engines) => {
    const { at, overloaded } = sessionIndex(request, engines);
    return engines.map((_, i) => (i === at && !overloaded ? 1 : 0));
  },
  /** `session`: the session's engine was kept; `session-overloaded`: it was too busy and another was chosen. */
  explain: (request, engines, chosen) => {
    const { at, overloaded } = sessionIndex(request, engines);
    if (at === -1) return undefined;
    if (engines[at] === chosen) return 'session';
    return overloaded ? 'session-overloaded' : undefined;
  },
};
