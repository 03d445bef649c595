import { describe, expect, it } from 'vitest';
import type { Quota } from '../../../core/db/control-plane-store.js';
import { formatDuration, rateLimitHeaders } from '../../../router/admission.js';
import { compileRules } from '../../../router/tenant-policy.js';

const quota = (model: string | null, keyId: string | null, rpm: number | null, tpm: number | null): Quota => ({
  tenantId: 't1',
  model,
  keyId,
  rpm,
  tpm,
  scope: keyId !== null ? (model !== null ? 'key+model' : 'key') : model !== null ? 'model' : 'tenant',
});

describe('compileRules', () => {
  const rules = compileRules(
    [quota(null, null, 60, 10_000), quota('llama', null, 10, null), quota(null, 'k1', null, 500), quota('llama', 'k1', 2, null)],
    ['secret-model'],
  );

  it('applies every scope that matches the model and key, each as its own budget', () => {
    expect(rules.rulesFor('llama', 'k1').map((r) => r.scope)).toEqual(['tenant', 'model:llama', 'key:k1', 'key:k1:model:llama']);
    expect(rules.rulesFor('llama', 'k2').map((r) => r.scope)).toEqual(['tenant', 'model:llama']);
    expect(rules.rulesFor('qwen', 'k1').map((r) => r.scope)).toEqual(['tenant', 'key:k1']);
    expect(rules.rulesFor('qwen', undefined)).toEqual([{ scope: 'tenant', rpm: 60, tpm: 10_000 }]);
  });

  it('hands back the same list for the same request shape', () => {
    expect(rules.rulesFor('llama', 'k1')).toBe(rules.rulesFor('llama', 'k1'));
  });

  it('lists denied models', () => {
    expect(rules.deniedModels.has('secret-model')).toBe(true);
    expect(rules.deniedModels.has('llama')).toBe(false);
  });

  it('has no rules for a tenant without quotas', () => {
    expect(compileRules([], []).rulesFor('llama', 'k1')).toEqual([]);
  });
});

describe('OpenAI rate-limit headers', () => {
  it('formats durations as OpenAI does', () => {
    expect(formatDuration(20)).toBe('20ms');
    expect(formatDuration(1500)).toBe('1.5s');
    expect(formatDuration(360_000)).toBe('6m0s');
    expect(formatDuration(61_250)).toBe('1m1.25s');
  });

  it('reports requests and tokens only where a limit of that kind applies', () => {
    expect(rateLimitHeaders({ limit: 60, remaining: 59, resetMs: 1000 }, undefined)).toEqual({
      'x-ratelimit-limit-requests': '60',
      'x-ratelimit-remaining-requests': '59',
      'x-ratelimit-reset-requests': '1s',
    });
    expect(Object.keys(rateLimitHeaders(undefined, { limit: 1000, remaining: 10, resetMs: 30 }))).toEqual([
      'x-ratelimit-limit-tokens',
      'x-ratelimit-remaining-tokens',
      'x-ratelimit-reset-tokens',
    ]);
  });
});
