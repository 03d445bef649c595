/**
 * Continuous-batching timing model of one vLLM engine (V1 scheduler, chunked prefill, prefix caching). It does no
 * I/O and owns no timer: the caller owns the clock. The live simulator calls step() from a real-time loop, the
 * trace replayer from a virtual clock, and both get the same schedule from the same inputs.
 *
 * One engine step (one forward pass over the batch) takes
 *
 *   stepMs = decodeBaseMs
 *          + 1000 * prefillTokens / prefillTokensPerSec
 *          + decodeMsPer1kKvTokens * kvTokens / 1000
 *
 *   prefillTokens  tokens computed in the step for requests in prefill: uncached prompt tokens, or the prompt and
 *                  output so far of a preempted request being recomputed (a decoding request's one token is not one)
 *   kvTokens       sum over the requests in the batch of their context length after the step
 *
 * Defaults, for Llama-3.1-8B in BF16 on one H100 80GB:
 *   decodeBaseMs           6.5     every pass reads 16 GB of weights at ~3 TB/s, plus launch overhead
 *   decodeMsPer1kKvTokens  0.044   a token's KV is 128 KiB (32 layers x 8 KV heads x 128 dims x K,V x 2 bytes),
 *                                  1,000 of them read at ~3 TB/s
 *   prefillTokensPerSec    30000   ~16 GFLOP per token at ~480 TFLOP/s effective
 *   maxNumSeqs             256     vLLM's defaults
 *   maxNumBatchedTokens    8192
 *   blockSize              16
 *   kvCapacityTokens       440000  ~54 GiB of KV, what is left of 80 GB after weights and activations
 *
 * So a decode-only step of 32 requests with 2,000 tokens of context each takes 6.5 + 0.044 * 64 = 9.3 ms, and an
 * uncached 3,000-token prompt alone gets its first token after 6.5 + 100 + 0.13 = 106.6 ms.
 *
 * Scheduling in each step, as vLLM V1 does it:
 * 1. Running requests, in admission order, get their next tokens within the token budget: one when decoding, a
 *    chunk when prefilling. When KV blocks run out, the most recently admitted running request is preempted: its
 *    blocks are released (their content stays cached) and it returns to the front of the waiting queue, to be
 *    recomputed later.
 * 2. If nothing was preempted, waiting requests are admitted in order while fewer than maxNumSeqs run, budget
 *    remains and KV blocks exist for their first chunk. Their cached prefix (whole blocks, never including the last
 *    prompt token, which must be computed to sample from) is reused, the rest computed. The first request that does
 *    not fit stops admission: requests wait while KV is full.
 * 3. A request whose computed tokens reach its length samples one token at the end of the step; all the step's
 *    events happen at its end.
 */

import { DEFAULT_ENGINE_PERF, type EnginePerf } from '../core/engine.js';
import { Deque } from './deque.js';
import { type BlockHash, type BlockId, DEFAULT_BLOCK_SIZE, PrefixCache } from './prefix-cache.js';

/** The step-time terms are routing's EnginePerf: the router's model of an engine is this model's form. */
export interface TimingParams extends EnginePerf {
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;
  readonly blockSize: number;
  readonly kvCapacityTokens: number;
}

export const DEFAULT_TIMING: Readonly<TimingParams> = {
  ...DEFAULT_ENGINE_PERF,
  maxNumSeqs: 256,
  maxNumBatchedTokens: 8192,
  blockSize: DEFAULT_BLOCK_SIZE,
  kvCapacityTokens: 440_000,
};

export interface ModelRequest {
  readonly id: string;
  readonly promptTokens: number;
  /** Tokens the request will generate before it finishes (the caller decides between EOS and max_tokens). */
  readonly outputTokens: number;
  /**
   * Chained hashes (see blockHashes()) of the full blocks of the prompt followed by the output, as far as the
   * caller knows them. Blocks past the end of the list are computed but never cached.
   */
  readonly blockHashes: readonly BlockHash[];
  /** LoRA adapter name, reported in lora_requests_info; the adapter's KV separation is in the hashes. */
  readonly adapter?: string;
}

export type EngineEvent =
  | { readonly type: 'first_token'; readonly id: string; readonly atMs: number; readonly cachedTokens: number }
  /** An output token after the first; `index` counts from 0, so it is at least 1. */
  | { readonly type: 'token'; readonly id: string; readonly atMs: number; readonly index: number }
  | { readonly type: 'finished'; readonly id: string; readonly atMs: number }
  | { readonly type: 'preempted'; readonly id: string; readonly atMs: number };

/**
 * A change to what the prefix cache holds, what vLLM's KV events report (BlockStored, BlockRemoved,
 * AllBlocksCleared). Recorded only when the model is built with `recordCacheEvents`.
 */
export type CacheEvent =
  /**
   * Blocks [fromBlock, toBlock) of the request (indices into its blockHashes) were computed and are now cached, or
   * were already cached under the same hash: as vLLM, one event per request per step for the blocks it filled.
   */
  | { readonly type: 'stored'; readonly request: ModelRequest; readonly fromBlock: number; readonly toBlock: number }
  /** The cached block named `hash` was evicted to make room. */
  | { readonly type: 'removed'; readonly hash: BlockHash }
  | { readonly type: 'cleared' };

export interface TimingModelOptions {
  /** Keep CacheEvents for takeCacheEvents(). Default false: the trace replayer has no use for them. */
  readonly recordCacheEvents?: boolean;
}

export interface StepResult {
  /** 0 when there was nothing to run. */
  readonly durationMs: number;
  readonly events: EngineEvent[];
  readonly batchSize: number;
  readonly prefillTokens: number;
  readonly kvTokens: number;
}

/** Running totals, named after the vLLM counters they feed. */
export interface TimingCounters {
  /** Prompt tokens of requests that produced their first token. */
  promptTokens: number;
  generationTokens: number;
  /** Prompt tokens looked up in the prefix cache, once per request (re-admissions after preemption excluded, as vLLM). */
  prefixQueryTokens: number;
  prefixHitTokens: number;
  preemptions: number;
}

class Sequence {
  generated = 0;
  computed = 0;
  /** Logical block i of the sequence is blocks[i]. */
  blocks: BlockId[] = [];
  /** Leading blocks whose content is registered in the cache. */
  committedBlocks = 0;
  cachedTokens = 0;
  preemptions = 0;
  finished = false;

  constructor(readonly request: ModelRequest) {}

  get numTokens(): number {
    return this.request.promptTokens + this.generated;
  }
}

const NO_BLOCKS: readonly BlockId[] = [];
const NO_CACHE_EVENTS: readonly CacheEvent[] = [];

export class TimingModel {
  readonly params: Readonly<TimingParams>;
  private readonly cache: PrefixCache;
  private running: Sequence[] = [];
  private readonly waiting = new Deque<Sequence>();
  private readonly byId = new Map<string, Sequence>();
  private readonly totals: TimingCounters = {
    promptTokens: 0,
    generationTokens: 0,
    prefixQueryTokens: 0,
    prefixHitTokens: 0,
    preemptions: 0,
  };

  private cacheEvents: CacheEvent[] | undefined;

  constructor(params: Partial<TimingParams> = {}, options: TimingModelOptions = {}) {
    this.params = { ...DEFAULT_TIMING, ...params };
    for (const [name, value] of Object.entries(this.params)) {
      if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`timing parameter ${name} must be a positive number, got ${value}`);
    }
    if (options.recordCacheEvents) this.cacheEvents = [];
    const onEvict = this.cacheEvents && ((hash: BlockHash) => void this.cacheEvents!.push({ type: 'removed', hash }));
    this.cache = new PrefixCache(this.params.kvCapacityTokens, this.params.blockSize, onEvict);
  }

  /** Largest prompt + output the KV cache can hold: a longer request could never run. */
  get maxSequenceTokens(): number {
    return this.cache.numBlocks * this.cache.blockSize;
  }

  get numRunning(): number {
    return this.running.length;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get idle(): boolean {
    return this.running.length === 0 && this.waiting.length === 0;
  }

  /** Fraction of KV blocks held by running requests, 0..1. */
  get kvUsage(): number {
    return this.cache.usage;
  }

  get counters(): Readonly<TimingCounters> {
    return this.totals;
  }

  /** Distinct adapters of running requests, in admission order. */
  runningAdapters(): string[] {
    return distinctAdapters(this.running);
  }

  waitingAdapters(): string[] {
    return distinctAdapters(this.waiting);
  }

  /**
   * The cache events recorded since the last call, oldest first (vLLM's take_events: the caller publishes them as
   * one batch per step). Always empty unless built with recordCacheEvents.
   */
  takeCacheEvents(): readonly CacheEvent[] {
    const events = this.cacheEvents;
    if (events === undefined || events.length === 0) return NO_CACHE_EVENTS;
    this.cacheEvents = [];
    return events;
  }

  /** Forgets all cached content (vLLM's reset_prefix_cache). False, and nothing changes, while requests hold blocks. */
  resetPrefixCache(): boolean {
    if (!this.cache.reset()) return false;
    this.cacheEvents?.push({ type: 'cleared' });
    return true;
  }

  /** Queues a request; it is considered from the next step on. */
  submit(request: ModelRequest): void {
    const { id, promptTokens, outputTokens } = request;
    if (!(Number.isInteger(promptTokens) && promptTokens >= 1)) throw new RangeError(`request ${id}: promptTokens must be a positive integer`);
    if (!(Number.isInteger(outputTokens) && outputTokens >= 1)) throw new RangeError(`request ${id}: outputTokens must be a positive integer`);
    this.requireFits(request);
    if (this.byId.has(id)) throw new Error(`request ${id} is already submitted`);
    const seq = new Sequence(request);
    this.byId.set(id, seq);
    this.waiting.pushBack(seq);
  }

  /** Drops a waiting or running request (client went away) and frees its blocks. False if it is not known. */
  abort(id: string): boolean {
    const seq = this.byId.get(id);
    if (seq === undefined) return false;
    this.byId.delete(id);
    const at = this.running.indexOf(seq);
    if (at >= 0) {
      this.running.splice(at, 1);
      this.cache.release(seq.blocks);
    } else {
      this.waiting.remove(seq);
    }
    return true;
  }

  /** Runs one engine step that starts at `nowMs`. The caller calls again at nowMs + durationMs. */
  step(nowMs: number): StepResult {
    const { blockSize, maxNumSeqs } = this.params;
    const batch: Sequence[] = [];
    const chunks: number[] = [];
    const preempted: Sequence[] = [];
    let budget = this.params.maxNumBatchedTokens;

    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i]!;
      const chunk = Math.min(seq.numTokens - seq.computed, budget);
      let fits = this.grow(seq, seq.computed + chunk);
      while (!fits) {
        const victim = this.running.pop()!;
        this.preempt(victim);
        preempted.push(victim);
        if (victim === seq) break;
        fits = this.grow(seq, seq.computed + chunk);
      }
      if (!fits) break;
      batch.push(seq);
      chunks.push(chunk);
      budget -= chunk;
    }

    while (preempted.length === 0 && this.waiting.length > 0 && this.running.length < maxNumSeqs && budget > 0) {
      const seq = this.waiting.peekFront()!;
      const hit = this.cache.matchPrefix(seq.request.blockHashes, Math.floor((seq.numTokens - 1) / blockSize));
      const computed = hit.length * blockSize;
      const chunk = Math.min(seq.numTokens - computed, budget);
      const freshBlocks = Math.ceil((computed + chunk) / blockSize) - hit.length;
      if (!this.cache.acquire(hit, freshBlocks, seq.blocks)) break;
      this.waiting.shift();
      seq.computed = computed;
      seq.committedBlocks = hit.length;
      if (seq.preemptions === 0) {
        seq.cachedTokens = computed;
        this.totals.prefixQueryTokens += seq.request.promptTokens;
        this.totals.prefixHitTokens += computed;
      }
      this.running.push(seq);
      batch.push(seq);
      chunks.push(chunk);
      budget -= chunk;
    }

    let prefillTokens = 0;
    let kvTokens = 0;
    for (let k = 0; k < batch.length; k++) {
      const seq = batch[k]!;
      const chunk = chunks[k]!;
      const decoding = chunk === 1 && seq.generated > 0 && seq.computed === seq.numTokens - 1;
      if (!decoding) prefillTokens += chunk;
      kvTokens += seq.computed + chunk;
    }
    const durationMs =
      batch.length === 0
        ? 0
        : this.params.decodeBaseMs +
          (1000 * prefillTokens) / this.params.prefillTokensPerSec +
          (this.params.decodeMsPer1kKvTokens * kvTokens) / 1000;
    const atMs = nowMs + durationMs;

    const events: EngineEvent[] = [];
    for (const seq of preempted) events.push({ type: 'preempted', id: seq.request.id, atMs });
    let anyFinished = false;
    for (let k = 0; k < batch.length; k++) {
      const seq = batch[k]!;
      seq.computed += chunks[k]!;
      this.commitFullBlocks(seq);
      if (seq.computed < seq.numTokens) continue;
      seq.generated++;
      this.totals.generationTokens++;
      const id = seq.request.id;
      if (seq.generated === 1) {
        this.totals.promptTokens += seq.request.promptTokens;
        events.push({ type: 'first_token', id, atMs, cachedTokens: seq.cachedTokens });
      } else {
        events.push({ type: 'token', id, atMs, index: seq.generated - 1 });
      }
      if (seq.generated === seq.request.outputTokens) {
        seq.finished = true;
        anyFinished = true;
        this.cache.release(seq.blocks);
        this.byId.delete(id);
        events.push({ type: 'finished', id, atMs });
      }
    }
    if (anyFinished) this.running = this.running.filter((seq) => !seq.finished);
    return { durationMs, events, batchSize: batch.length, prefillTokens, kvTokens };
  }

  /**
   * Accounts for a request served outside the batch in no time (the simulator's zero-latency mode): the prefix
   * cache and the counters change as if it had run alone. Returns its cached prompt tokens.
   */
  serveInstantly(request: ModelRequest): number {
    const { blockSize } = this.params;
    this.requireFits(request);
    const total = request.promptTokens + request.outputTokens;
    const hit = this.cache.matchPrefix(request.blockHashes, Math.floor((request.promptTokens - 1) / blockSize));
    const blocks: BlockId[] = [];
    if (!this.cache.acquire(hit, Math.ceil(total / blockSize) - hit.length, blocks)) {
      throw new Error(`request ${request.id}: no KV blocks free; zero-latency requests cannot share the engine with batched ones`);
    }
    // The last sampled token is never fed back, so it is not in the KV.
    const computedBlocks = Math.min(Math.floor((total - 1) / blockSize), request.blockHashes.length);
    this.cacheBlocks(request, blocks, hit.length, computedBlocks);
    this.cache.release(blocks);
    const cachedTokens = hit.length * blockSize;
    this.totals.prefixQueryTokens += request.promptTokens;
    this.totals.prefixHitTokens += cachedTokens;
    this.totals.promptTokens += request.promptTokens;
    this.totals.generationTokens += request.outputTokens;
    return cachedTokens;
  }

  private requireFits(request: ModelRequest): void {
    const total = request.promptTokens + request.outputTokens;
    if (total > this.maxSequenceTokens) throw new RangeError(`request ${request.id}: ${total} tokens exceed the KV capacity of ${this.maxSequenceTokens}`);
  }

  private grow(seq: Sequence, tokens: number): boolean {
    const missing = Math.ceil(tokens / this.params.blockSize) - seq.blocks.length;
    return missing <= 0 || this.cache.acquire(NO_BLOCKS, missing, seq.blocks);
  }

  private preempt(seq: Sequence): void {
    this.cache.release(seq.blocks);
    seq.blocks = [];
    seq.computed = 0;
    seq.committedBlocks = 0;
    seq.preemptions++;
    this.totals.preemptions++;
    this.waiting.pushFront(seq);
  }

  private commitFullBlocks(seq: Sequence): void {
    const full = Math.floor(seq.computed / this.params.blockSize);
    this.cacheBlocks(seq.request, seq.blocks, seq.committedBlocks, Math.min(full, seq.request.blockHashes.length));
    seq.committedBlocks = full;
  }

  /** Registers the request's computed blocks [from, to) in the cache, as one BlockStored when there are any. */
  private cacheBlocks(request: ModelRequest, blocks: readonly BlockId[], from: number, to: number): void {
    for (let b = from; b < to; b++) this.cache.cacheBlock(blocks[b]!, request.blockHashes[b]!);
    if (to > from) this.cacheEvents?.push({ type: 'stored', request, fromBlock: from, toBlock: to });
  }
}

function distinctAdapters(seqs: Iterable<Sequence>): string[] {
  const names = new Set<string>();
  for (const seq of seqs) if (seq.request.adapter !== undefined) names.add(seq.request.adapter);
  return [...names];
}
