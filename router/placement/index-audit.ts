import type { FastifyBaseLogger } from 'fastify';
import { Counter, type Registry } from 'prom-client';

/**
 * The prefix index checked against what engines say: after each answer, what the index claimed the engine held of
 * the prompt against the cached tokens the engine reported. An engine whose answers keep contradicting the index is
 * degraded: a state shown on /healthz and logged once, never an exception, since routing still works (it only
 * stops finding the cache it aims for).
 */

export type IndexVerdict = 'agree' | 'over' | 'under';

/**
 * Comparisons an engine is judged on: its most recent ones, enough that a burst of legitimate over-estimates (a
 * request sharing a prefix whose first prefill is still under way, an eviction the index has not heard of yet)
 * stays a minority, few enough that a fixed configuration shows within a few dozen answers.
 */
export const AUDIT_WINDOW = 50;

/** No verdict on fewer comparisons than this: a handful of answers is an anecdote, not a misconfiguration. */
export const AUDIT_MIN_SAMPLES = 20;

/**
 * The share of 'over' verdicts in the window that makes an engine degraded: the index is wrong on nearly every
 * answer, which the legitimate causes above never sustain, while a wrong tokenizer, hashing or a cache that is off
 * makes every claim wrong.
 */
export const DEGRADED_OVER_SHARE = 0.8;

/**
 * The share below which a degraded engine recovers. Lower than DEGRADED_OVER_SHARE so that an engine hovering
 * near the threshold does not log a warning and a recovery on alternate answers.
 */
export const RECOVERED_OVER_SHARE = 0.5;

/**
 * Comparisons older than this are dropped: the fleet they describe may be gone (a restart, a fixed configuration),
 * and an engine that stopped getting traffic should not stay degraded on what it did an hour ago.
 */
export const AUDIT_MAX_AGE_MS = 10 * 60_000;

export interface IndexAuditOptions {
  readonly registry: Registry;
  readonly log: FastifyBaseLogger;
  /** The index's block size in tokens (kvBlockSize). */
  readonly blockTokens: number;
  /** Whether the engine has a KV events subscription, to name the likely cause. */
  readonly kvEvents: (engineId: string) => boolean;
  /** Default AUDIT_WINDOW; at least AUDIT_MIN_SAMPLES. */
  readonly window?: number;
  /** Milliseconds on a monotonic clock; default performance.now. */
  readonly now?: () => number;
}

interface Sample {
  readonly over: boolean;
  readonly atMs: number;
}

interface EngineAudit {
  /** Comparisons where the index claimed at least one block, oldest first. */
  readonly samples: Sample[];
  overs: number;
  /** Whether the engine ever reported a cached token, on any comparison. */
  everCached: boolean;
  degraded: boolean;
}

export class IndexAudit {
  readonly #log: FastifyBaseLogger;
  readonly #blockTokens: number;
  readonly #kvEvents: (engineId: string) => boolean;
  readonly #window: number;
  readonly #now: () => number;
  readonly #verdicts: Counter<'engine' | 'verdict'>;
  readonly #engines = new Map<string, EngineAudit>();

  constructor(opts: IndexAuditOptions) {
    if (!(Number.isInteger(opts.blockTokens) && opts.blockTokens >= 1)) throw new RangeError(`index audit: blockTokens must be a positive integer, got ${opts.blockTokens}`);
    const window = opts.window ?? AUDIT_WINDOW;
    if (!(Number.isInteger(window) && window >= AUDIT_MIN_SAMPLES)) {
      throw new RangeError(`index audit: window must be an integer of at least ${AUDIT_MIN_SAMPLES} (AUDIT_MIN_SAMPLES), got ${window}`);
    }
    this.#log = opts.log;
    this.#blockTokens = opts.blockTokens;
    this.#kvEvents = opts.kvEvents;
    this.#window = window;
    this.#now = opts.now ?? (() => performance.now());
    this.#verdicts = new Counter({
      name: 'switchyard_prefix_index_agreement_total',
      help: 'Answers whose engine-reported cached tokens agree with the prefix index\'s claim (within one block), or show it claimed too much (over) or too little (under)',
      labelNames: ['engine', 'verdict'],
      registers: [opts.registry],
    });
  }

  /**
   * After an answer: the index claimed `claimedTokens` of the prompt were on the engine; the engine reported
   * `cachedTokens` (0 when its usage had no cached-token count). They agree within one index block: the engine
   * counts whole blocks of its own and never caches the prompt's last token.
   */
  compare(engineId: string, claimedTokens: number, cachedTokens: number): IndexVerdict {
    count('claimedTokens', claimedTokens);
    count('cachedTokens', cachedTokens);
    const verdict: IndexVerdict =
      claimedTokens - cachedTokens > this.#blockTokens ? 'over' : cachedTokens - claimedTokens > this.#blockTokens ? 'under' : 'agree';
    this.#verdicts.inc({ engine: engineId, verdict });
    let audit = this.#engines.get(engineId);
    if (audit === undefined) this.#engines.set(engineId, (audit = { samples: [], overs: 0, everCached: false, degraded: false }));
    if (cachedTokens > 0) audit.everCached = true;
    const now = this.#now();
    // A claim of nothing is no claim to judge: under-estimates cost a missed hit, never a wrong route.
    if (claimedTokens >= this.#blockTokens) {
      const over = verdict === 'over';
      audit.samples.push({ over, atMs: now });
      if (over) audit.overs++;
      if (audit.samples.length > this.#window && audit.samples.shift()!.over) audit.overs--;
    }
    this.#judge(engineId, audit, now);
    return verdict;
  }

  /** Engines whose answers persistently contradict the index, with the likely cause, for /healthz. */
  degraded(): readonly { engine: string; reason: string }[] {
    const now = this.#now();
    const out: { engine: string; reason: string }[] = [];
    for (const [engine, audit] of this.#engines) {
      this.#judge(engine, audit, now);
      if (audit.degraded) out.push({ engine, reason: this.#cause(engine, audit) });
    }
    return out;
  }

  /** The engine left the fleet: its history and its series go with it. */
  forget(engineId: string): void {
    this.#engines.delete(engineId);
    for (const verdict of ['agree', 'over', 'under'] as const) this.#verdicts.remove({ engine: engineId, verdict });
  }

  #judge(engine: string, audit: EngineAudit, now: number): void {
    const { samples } = audit;
    while (samples.length > 0 && now - samples[0]!.atMs > AUDIT_MAX_AGE_MS) {
      if (samples.shift()!.over) audit.overs--;
    }
    const judged = samples.length >= AUDIT_MIN_SAMPLES;
    const overShare = samples.length === 0 ? 0 : audit.overs / samples.length;
    if (!audit.degraded && judged && overShare >= DEGRADED_OVER_SHARE) {
      audit.degraded = true;
      const reason = this.#cause(engine, audit);
      this.#log.warn({ engine, reason, overShare, samples: samples.length }, `the prefix index keeps claiming more of the prompt than engine ${engine} reports cached: ${reason}`);
    } else if (audit.degraded && (!judged || overShare < RECOVERED_OVER_SHARE)) {
      audit.degraded = false;
      this.#log.info({ engine, overShare, samples: samples.length }, `the prefix index agrees with engine ${engine} again`);
    }
  }

  #cause(engine: string, audit: EngineAudit): string {
    if (!audit.everCached) return 'the engine reports no cached tokens: prefix caching off, or its usage lacks prompt_tokens_details.cached_tokens';
    if (this.#kvEvents(engine)) return 'KV events missing or kvcache.hashing does not match the engine';
    return "kvcache.tokenizer or kvcache.hashing does not match the engine's";
  }
}

function count(name: string, value: number): void {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`index audit: ${name} must be a non-negative number, got ${value}`);
}
