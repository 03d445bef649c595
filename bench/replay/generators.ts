import { createRng } from '../../core/hash.js';
import { TRACE_BLOCK_TOKENS, type TraceRequest } from './trace.js';

/**
 * Synthetic Mooncake-format traces for the cases the Mooncake trace has little of, replayed open loop (closed-loop
 * users are in closed-loop.ts). Arrivals are Poisson (seeded, so a trace is reproducible); lengths are uniform in the
 * given ranges. Block ids are allocated in order, so ids are shared exactly where the generator means a shared prefix.
 */

export type GeneratorName = 'shared-system-prompt' | 'multi-turn';
export const GENERATOR_NAMES: readonly GeneratorName[] = ['shared-system-prompt', 'multi-turn'];

export interface SharedSystemPromptOptions {
  readonly requests: number;
  readonly ratePerSec: number;
  /** Rounded up to whole 512-token blocks: a trace can only share whole blocks. */
  readonly systemPromptTokens: number;
  /** Each user's own part of the prompt, after the system prompt. */
  readonly userTokens: readonly [number, number];
  readonly outputTokens: readonly [number, number];
  readonly seed: number;
}

/** Many users, one long system prompt: every request starts with the same blocks, then has its own. */
export function sharedSystemPromptTrace(opts: SharedSystemPromptOptions): TraceRequest[] {
  const rng = createRng(opts.seed);
  const systemBlocks = Math.ceil(opts.systemPromptTokens / TRACE_BLOCK_TOKENS);
  const system = Array.from({ length: systemBlocks }, (_, i) => i);
  let nextId = systemBlocks;
  let t = 0;
  const out: TraceRequest[] = [];
  for (let i = 0; i < opts.requests; i++) {
    t += exponentialMs(rng, 1000 / opts.ratePerSec);
    const user = uniformInt(rng, opts.userTokens);
    const inputLength = systemBlocks * TRACE_BLOCK_TOKENS + user;
    const own = Math.ceil(user / TRACE_BLOCK_TOKENS);
    const hashIds = [...system, ...Array.from({ length: own }, () => nextId++)];
    out.push({ timestampMs: Math.round(t), inputLength, outputLength: uniformInt(rng, opts.outputTokens), hashIds });
  }
  return out;
}

export interface MultiTurnOptions {
  readonly conversations: number;
  /** New conversations per second. */
  readonly ratePerSec: number;
  readonly turns: readonly [number, number];
  /** Mean pause between an answer and the next turn (exponential); the answer's own time is not modelled. */
  readonly thinkTimeMs: number;
  readonly firstPromptTokens: readonly [number, number];
  /** Tokens each later turn adds to the conversation (the previous answer and the new user message). */
  readonly turnTokens: readonly [number, number];
  readonly outputTokens: readonly [number, number];
  readonly seed: number;
}

/**
 * Conversations of several turns: each turn's prompt is the previous turn's prompt plus new tokens, so it extends
 * the previous one's blocks (the previous last block, partial then, is whole now: same id, same leading tokens).
 */
export function multiTurnTrace(opts: MultiTurnOptions): TraceRequest[] {
  const rng = createRng(opts.seed);
  let nextId = 0;
  let start = 0;
  const out: TraceRequest[] = [];
  for (let c = 0; c < opts.conversations; c++) {
    start += exponentialMs(rng, 1000 / opts.ratePerSec);
    const turns = uniformInt(rng, opts.turns);
    let t = start;
    let length = 0;
    const ids: number[] = [];
    for (let k = 0; k < turns; k++) {
      if (k > 0) t += exponentialMs(rng, opts.thinkTimeMs);
      length += uniformInt(rng, k === 0 ? opts.firstPromptTokens : opts.turnTokens);
      while (ids.length * TRACE_BLOCK_TOKENS < length) ids.push(nextId++);
      out.push({ timestampMs: Math.round(t), inputLength: length, outputLength: uniformInt(rng, opts.outputTokens), hashIds: ids.slice() });
    }
  }
  return out.sort((a, b) => a.timestampMs - b.timestampMs);
}

/** A generator with the defaults the CLI uses: about 4 engines' worth of load at H100 speed. */
export function generateTrace(name: GeneratorName, requests: number, seed: number): TraceRequest[] {
  if (name === 'shared-system-prompt') {
    return sharedSystemPromptTrace({
      requests,
      ratePerSec: 20,
      systemPromptTokens: 6144,
      userTokens: [200, 2000],
      outputTokens: [50, 300],
      seed,
    });
  }
  return multiTurnTrace({
    conversations: Math.max(1, Math.round(requests / 6)),
    ratePerSec: 2,
    turns: [2, 10],
    thinkTimeMs: 20_000,
    firstPromptTokens: [1000, 8000],
    turnTokens: [200, 1500],
    outputTokens: [50, 400],
    seed,
  });
}

/** An exponential draw with mean `meanMs` (0 gives 0): Poisson arrivals' gaps, users' think times. */
export function exponentialMs(rng: () => number, meanMs: number): number {
  return -Math.log(1 - rng()) * meanMs;
}

/** An integer drawn uniformly from [lo, hi]. */
export function uniformInt(rng: () => number, [lo, hi]: readonly [number, number]): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}
