import { createRng, mixHashes } from '../../core/hash.js';
import { exponentialMs, uniformInt } from './generators.js';
import { TRACE_BLOCK_TOKENS } from './trace.js';
import type { Workload, WorkloadRequest } from './workload.js';

/**
 * Closed-loop workloads: N users, each sending its next request when its last one ended plus a think time
 * (exponential, mean `thinkMs`, 0 allowed; a user's first request also waits one, so users do not all start at
 * once unless the think time is 0). A policy that slows a user slows what that user sends next, as in production.
 *
 * A user's k-th request is drawn from a PRNG seeded by (seed, user, k) and from the user's previous request alone,
 * never from when it is sent or from the other users: every policy replays the same requests of each user, only at
 * other times. Block ids are shared exactly where a prefix is meant to be (a system prompt, a conversation's
 * history); every other block gets an id of its user's own.
 */

export type ClosedLoopName = 'shared-prompt' | 'zipf-prompts' | 'conversations';
export const CLOSED_LOOP_NAMES: readonly ClosedLoopName[] = ['shared-prompt', 'zipf-prompts', 'conversations'];

type Range = readonly [number, number];

export interface UsersOptions {
  readonly users: number;
  /** All users together send this many at most: each user its share (they differ by one at most). */
  readonly requests: number;
  readonly thinkMs: number;
  readonly seed: number;
}

export interface ClosedLoopSettings extends UsersOptions {
  /** zipf-prompts: how many system prompts. */
  readonly prompts: number;
}

/**
 * The CLI's defaults. Lengths follow the common production case (system prompts of 2K-6K tokens, short user parts,
 * answers of 64-300 tokens). An answer takes about 1.4 s on an H100 engine at engine-sim's defaults, so with a 1 s
 * mean think time about half of 32 users wait for one at any moment: 4 engines step all the time with batches of
 * about 4, and a policy that piles users onto one engine shows at once in TPOT and E2E, without queueing hiding it.
 */
export const CLOSED_LOOP_DEFAULTS = { users: 32, thinkMs: 1000, prompts: 8 } as const;

/** A closed-loop workload of the given kind, its lengths at the defaults documented in bench/replay/README.md. */
export function closedLoopWorkload(name: ClosedLoopName, settings: ClosedLoopSettings): Workload {
  const userTokens = [50, 500] as const;
  const outputTokens = [64, 300] as const;
  switch (name) {
    case 'shared-prompt':
      return sharedPromptUsers({ ...settings, systemPromptTokens: 4096, userTokens, outputTokens });
    case 'zipf-prompts':
      return zipfPromptUsers({ ...settings, systemPromptTokens: [2048, 6144], exponent: 1, userTokens, outputTokens });
    case 'conversations':
      return conversationUsers({ ...settings, systemPromptTokens: 2048, turns: [2, 8], firstMessageTokens: [100, 1500], userTokens, outputTokens });
  }
}

export interface SharedPromptOptions extends UsersOptions {
  /** Rounded up to whole 512-token blocks: a trace can only share whole blocks. */
  readonly systemPromptTokens: number;
  /** The user's own part of each prompt, after the system prompt. */
  readonly userTokens: Range;
  readonly outputTokens: Range;
}

/** Every user's every request: the one system prompt, then the user's own new tokens. */
export function sharedPromptUsers(opts: SharedPromptOptions): Workload {
  checkRange('systemPromptTokens', [opts.systemPromptTokens, opts.systemPromptTokens], 1);
  return promptUsers(opts, [blockIds(0, opts.systemPromptTokens)], () => 0);
}

export interface ZipfPromptsOptions extends Omit<SharedPromptOptions, 'systemPromptTokens'> {
  /** How many system prompts (K). */
  readonly prompts: number;
  /** Each prompt's length, drawn once per prompt. */
  readonly systemPromptTokens: Range;
  /** Prompt k (from 0) is picked with weight 1 / (k + 1)^exponent. */
  readonly exponent: number;
}

/** K system prompts of Zipf popularity (several products or agents on one model): each request picks one. */
export function zipfPromptUsers(opts: ZipfPromptsOptions): Workload {
  if (!(Number.isInteger(opts.prompts) && opts.prompts >= 1)) throw new RangeError(`prompts must be a positive integer, got ${opts.prompts}`);
  if (!(opts.exponent >= 0 && Number.isFinite(opts.exponent))) throw new RangeError(`exponent must be >= 0, got ${opts.exponent}`);
  checkRange('systemPromptTokens', opts.systemPromptTokens, 1);
  // The prompts' lengths have a stream of their own: the same seed gives the same prompts, whatever the users send.
  const rng = createRng(mixHashes(opts.seed, 0x7a697066));
  const prompts: number[][] = [];
  let next = 0;
  for (let k = 0; k < opts.prompts; k++) {
    prompts.push(blockIds(next, uniformInt(rng, opts.systemPromptTokens)));
    next += prompts[k].length;
  }
  const cumulative: number[] = [];
  let total = 0;
  for (let k = 0; k < opts.prompts; k++) cumulative.push((total += (k + 1) ** -opts.exponent));
  return promptUsers(opts, prompts, (r) => {
    const x = r() * total;
    const k = cumulative.findIndex((c) => x < c);
    return k === -1 ? opts.prompts - 1 : k;
  });
}

export interface ConversationsOptions extends UsersOptions {
  /** A system prompt in front of every conversation (0 for none); rounded up to whole blocks. */
  readonly systemPromptTokens: number;
  /** Turns per conversation; then the user starts a new one. */
  readonly turns: Range;
  /** The first user message of a conversation. */
  readonly firstMessageTokens: Range;
  /** Each later user message, added after the previous answer. */
  readonly userTokens: Range;
  readonly outputTokens: Range;
}

interface Conversation {
  readonly index: number;
  readonly turn: number;
  readonly turns: number;
}

/**
 * Each user holds a conversation: a turn's prompt is the previous turn's prompt, its answer and a new message, so it
 * extends the previous prompt's blocks (its last block, partial then, keeps its id: the same leading tokens). A
 * conversation is one session (`u<user>-c<n>`), as a gateway sees it in `x-session-id`.
 */
export function conversationUsers(opts: ConversationsOptions): Workload {
  if (!(Number.isInteger(opts.systemPromptTokens) && opts.systemPromptTokens >= 0)) {
    throw new RangeError(`systemPromptTokens must be an integer >= 0, got ${opts.systemPromptTokens}`);
  }
  checkRange('turns', opts.turns, 1);
  checkRange('firstMessageTokens', opts.firstMessageTokens, 1);
  checkRange('userTokens', opts.userTokens, 1);
  checkRange('outputTokens', opts.outputTokens, 1);
  const system = blockIds(0, opts.systemPromptTokens);
  return closedLoop<Conversation>(opts, system.length, ({ rng, user, own }, previous) => {
    const last = previous?.state;
    if (last !== undefined && last.turn + 1 < last.turns) {
      const { request } = previous!;
      const inputLength = request.inputLength + request.outputLength + uniformInt(rng, opts.userTokens);
      const hashIds = [...request.hashIds];
      while (hashIds.length * TRACE_BLOCK_TOKENS < inputLength) hashIds.push(own());
      const state = { ...last, turn: last.turn + 1 };
      return { state, inputLength, hashIds, outputLength: uniformInt(rng, opts.outputTokens), session: request.session };
    }
    const state = { index: last === undefined ? 0 : last.index + 1, turn: 0, turns: uniformInt(rng, opts.turns) };
    const inputLength = system.length * TRACE_BLOCK_TOKENS + uniformInt(rng, opts.firstMessageTokens);
    const hashIds = [...system];
    while (hashIds.length * TRACE_BLOCK_TOKENS < inputLength) hashIds.push(own());
    return { state, inputLength, hashIds, outputLength: uniformInt(rng, opts.outputTokens), session: `u${user}-c${state.index}` };
  });
}

/** What a user sends next, before its time is known, and what the user remembers for the request after. */
type Draft<S> = Omit<WorkloadRequest, 'timestampMs'> & { readonly state: S };

interface UserContext {
  /** This request's own PRNG stream. */
  readonly rng: () => number;
  readonly user: number;
  /** The user's next block id of its own: ids from the workload's base up, strided by user, so no two users share one. */
  readonly own: () => number;
}

type UserStep<S> = (user: UserContext, previous: { readonly request: WorkloadRequest; readonly state: S } | undefined) => Draft<S>;

interface Sent<S> {
  readonly user: number;
  readonly ordinal: number;
  readonly state: S;
  /** How many own block ids the user has used up to and including this request. */
  readonly ownUsed: number;
}

/** The closed loop: users, their quotas, their think times, their per-request PRNG streams and own block ids. */
function closedLoop<S>(opts: UsersOptions, base: number, step: UserStep<S>): Workload {
  if (!(Number.isInteger(opts.users) && opts.users >= 1)) throw new RangeError(`users must be a positive integer, got ${opts.users}`);
  if (!(Number.isInteger(opts.requests) && opts.requests >= 1)) throw new RangeError(`requests must be a positive integer, got ${opts.requests}`);
  if (!(opts.thinkMs >= 0 && Number.isFinite(opts.thinkMs))) throw new RangeError(`thinkMs must be a number >= 0, got ${opts.thinkMs}`);
  const users = Math.min(opts.users, opts.requests);
  const quota = (user: number) => Math.floor(opts.requests / users) + (user < opts.requests % users ? 1 : 0);
  const sent = new WeakMap<WorkloadRequest, Sent<S>>();

  const send = (user: number, atMs: number, previous?: { readonly request: WorkloadRequest; readonly sent: Sent<S> }): WorkloadRequest => {
    const ordinal = previous === undefined ? 0 : previous.sent.ordinal + 1;
    const rng = createRng(mixHashes(mixHashes(opts.seed, user), ordinal));
    const timestampMs = atMs + exponentialMs(rng, opts.thinkMs);
    let ownUsed = previous?.sent.ownUsed ?? 0;
    const own = () => base + user + users * ownUsed++;
    const { state, ...draft } = step({ rng, user, own }, previous && { request: previous.request, state: previous.sent.state });
    const request: WorkloadRequest = { timestampMs, ...draft };
    sent.set(request, { user, ordinal, state, ownUsed });
    return request;
  };

  const initial = Array.from({ length: users }, (_, user) => send(user, 0));
  return {
    initial: initial.sort((a, b) => a.timestampMs - b.timestampMs),
    next(ended, atMs) {
      const last = sent.get(ended);
      if (last === undefined) throw new Error('next() was given a request this workload did not send');
      return last.ordinal + 1 < quota(last.user) ? send(last.user, atMs, { request: ended, sent: last }) : undefined;
    },
  };
}

/** Users in front of one or more system prompts: each request is `pick`'s prompt, then the user's own tokens. */
function promptUsers(opts: Omit<SharedPromptOptions, 'systemPromptTokens'>, prompts: readonly (readonly number[])[], pick: (rng: () => number) => number): Workload {
  checkRange('userTokens', opts.userTokens, 1);
  checkRange('outputTokens', opts.outputTokens, 1);
  const base = prompts.reduce((n, p) => n + p.length, 0);
  return closedLoop<undefined>(opts, base, ({ rng, own }) => {
    const system = prompts[pick(rng)];
    const mine = uniformInt(rng, opts.userTokens);
    const hashIds = [...system];
    for (let b = Math.ceil(mine / TRACE_BLOCK_TOKENS); b > 0; b--) hashIds.push(own());
    return { state: undefined, inputLength: system.length * TRACE_BLOCK_TOKENS + mine, outputLength: uniformInt(rng, opts.outputTokens), hashIds };
  });
}

/** Ids from `first` on for `tokens` tokens, rounded up to whole blocks. */
function blockIds(first: number, tokens: number): number[] {
  return Array.from({ length: Math.ceil(tokens / TRACE_BLOCK_TOKENS) }, (_, i) => first + i);
}

function checkRange(name: string, [lo, hi]: Range, min: number): void {
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= min && lo <= hi)) {
    throw new RangeError(`${name} must be integers ${min} <= lo <= hi, got [${lo}, ${hi}]`);
  }
}
