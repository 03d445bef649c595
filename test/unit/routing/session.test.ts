import { describe, expect, it } from 'vitest';
import { createRng } from '../../../core/hash.js';
import { createPipeline } from '../../../router/routing/pipeline.js';
import { SESSION_OVERLOAD, sessionScorer } from '../../../router/routing/plugins/session.js';
import { engine, prefix, request } from './fixtures.js';

const route = (...args: Parameters<ReturnType<typeof createPipeline>['route']>) =>
  createPipeline({ policy: 'prefix-cache-v1' }, { rng: createRng(3) }).route(...args)!;

describe('session scorer', () => {
  it("scores 1 on the session's engine and 0 elsewhere, 0 everywhere without a session", () => {
    const engines = [engine('a'), engine('b'), engine('c')];
    expect(sessionScorer.score(request({ sessionEngine: 'b' }), engines)).toEqual([0, 1, 0]);
    expect(sessionScorer.score(request(), engines)).toEqual([0, 0, 0]);
  });

  it(`lets go of an engine with more than SESSION_OVERLOAD (${SESSION_OVERLOAD}) prompts more queued than the idlest`, () => {
    const req = request({ sessionEngine: 'a' });
    expect(sessionScorer.score(req, [engine('a', { inFlight: SESSION_OVERLOAD }), engine('b')])).toEqual([1, 0]);
    expect(sessionScorer.score(req, [engine('a', { inFlight: SESSION_OVERLOAD + 1 }), engine('b')])).toEqual([0, 0]);
    const tokens = request({ sessionEngine: 'a', promptTokens: 1000 });
    const pending = (a: number) => [engine('a', { pendingPrefillTokens: a }), engine('b', { pendingPrefillTokens: 0 })];
    expect(sessionScorer.score(tokens, pending(SESSION_OVERLOAD * 1000))).toEqual([1, 0]);
    expect(sessionScorer.score(tokens, pending(SESSION_OVERLOAD * 1000 + 1))).toEqual([0, 0]);
  });

  it("keeps a conversation on its engine in the prefix-cache policy while that engine is not much busier", () => {
    const kept = route(request({ sessionEngine: 'c' }), [engine('a'), engine('b'), engine('c', { inFlight: 2 })]);
    expect(kept.engine.spec.id).toBe('c');
    expect(kept.reason).toBe('session');
    const moved = route(request({ sessionEngine: 'c' }), [engine('a'), engine('b'), engine('c', { inFlight: SESSION_OVERLOAD + 1 })]);
    expect(moved.engine.spec.id).not.toBe('c');
    expect(moved.reason).toBe('session-overloaded');
  });

  it('lets the index win over the session: an engine shown holding the prompt beats one that only served the session', () => {
    const decision = route(request({ sessionEngine: 'a', prefix: prefix(40, { b: 40 }) }), [engine('a'), engine('b')]);
    expect(decision.engine.spec.id).toBe('b');
    expect(decision.reason).toBe('prefix-hit');
  });

  it('ignores a session whose engine is gone (unhealthy, removed or already tried)', () => {
    const req = request({ sessionEngine: 'a' });
    expect(route(req, [engine('a', { healthy: false }), engine('b', { inFlight: 3 })]).engine.spec.id).toBe('b');
    expect(route(request({ sessionEngine: 'a', exclude: new Set(['a']) }), [engine('a'), engine('b', { inFlight: 3 })]).engine.spec.id).toBe('b');
    expect(sessionScorer.score(request({ sessionEngine: 'gone' }), [engine('a'), engine('b')])).toEqual([0, 0]);
    expect(sessionScorer.explain!(request({ sessionEngine: 'gone' }), [engine('a')], engine('a'))).toBeUndefined();
  });
});
