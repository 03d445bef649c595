import { LRUCache } from 'lru-cache';

/**
 * Completion tokens expected of a request before it runs, for the cost model's decode terms: its max_tokens, capped
 * by what requests of the same tenant and model have really produced (clients set max_tokens far above what they
 * get: 4,096 for answers of 200). Without history, DEFAULT_OUTPUT_TOKENS.
 */

/** A chat answer's typical length; used until a (tenant, model) has history, capped by max_tokens. */
export const DEFAULT_OUTPUT_TOKENS = 256;
/** Weight of each new observation in the running mean: about the last 20 requests count. */
const SMOOTHING = 0.05;
/** (tenant, model) pairs remembered; the least recently used beyond it start again from the default. */
const MAX_KEYS = 10_000;

export class OutputLengths {
  readonly #means = new LRUCache<string, { mean: number }>({ max: MAX_KEYS });

  expected(tenant: string, model: string, maxTokens: number | undefined): number {
    const known = this.#means.get(key(tenant, model))?.mean ?? DEFAULT_OUTPUT_TOKENS;
    const expected = maxTokens === undefined ? known : Math.min(maxTokens, known);
    return Math.max(1, Math.round(expected));
  }

  observe(tenant: string, model: string, completionTokens: number): void {
    if (!(completionTokens >= 1)) return;
    const k = key(tenant, model);
    const entry = this.#means.get(k);
    if (entry === undefined) this.#means.set(k, { mean: completionTokens });
    else entry.mean += SMOOTHING * (completionTokens - entry.mean);
  }
}

function key(tenant: string, model: string): string {
  return `${tenant}\u0000${model}`;
}
