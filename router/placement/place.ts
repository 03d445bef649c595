import type { EngineSnapshot } from '../../core/engine.js';
import type { BlockHash, PrefixMatches } from '../../kvcache/types.js';
import { predictLatency, prefillShare, queuedLoad, queuedPrefill } from '../routing/engine-model.js';
import type { RoutingPipeline } from '../routing/pipeline.js';
import type { RequestFeatures, RoutingDecision } from '../routing/types.js';
import type { Calibration } from './calibration.js';
import type { RequestLoad } from './in-flight-load.js';
import type { OutputLengths } from './output-length.js';
import { PrefixHeat } from './prefix-heat.js';

/**
 * The placement step, the one piece of code the gateway (router/proxy.ts) and the trace replayer
 * (bench/replay/simulate.ts) both run for every request: route; count what the request adds to its engine (queued
 * prefill, in-flight KV and output); record its prompt's blocks for that engine in the index; release the prefill
 * at its first token and the rest at its end; and learn from what happened (calibration, output lengths, the
 * index's claims against the engine's cached tokens). So the replayer measures the gateway's own placement.
 */

/** The engines, as the live registry or the replayer's simulated fleet keeps them. */
export interface PlacementFleet {
  snapshot(): readonly EngineSnapshot[];
  acquire(id: string, load: RequestLoad): void;
  prefillDone(id: string, load: RequestLoad): void;
  release(id: string, load: RequestLoad): void;
}

/** What placement writes to the prefix index: kvcache's PrefixIndex, or the gateway's PrefixTracker over it. */
export interface PrefixRecorder {
  recordStored(engineId: string, hashes: readonly BlockHash[]): void;
  recordRemoved(engineId: string, hashes: readonly BlockHash[]): void;
}

/** Compares the index's claims with what engines report (router/placement/index-audit.ts). */
export interface ClaimAudit {
  compare(engineId: string, claimedTokens: number, cachedTokens: number): 'agree' | 'over' | 'under';
}

/** What a finished request tells placement; every field the engine did not report is undefined. */
export interface Outcome {
  readonly atMs: number;
  readonly completionTokens?: number | undefined;
  readonly cachedTokens?: number | undefined;
  /** False for an answer that came whole: no first-token time, no gaps between tokens to learn from. */
  readonly streamed: boolean;
}

/** Predicted against observed, per request, for the metrics and the replayer's report. */
export interface PredictionCheck {
  readonly engineId: string;
  readonly predictedTtftMs: number;
  readonly ttftMs: number;
  readonly predictedTpotMs: number;
  /** Undefined when the answer had fewer than two tokens or was not streamed. */
  readonly tpotMs: number | undefined;
}

export interface PlacementDeps {
  readonly pipeline: RoutingPipeline;
  readonly fleet: PlacementFleet;
  /** Absent when the gateway keeps no prefix index. */
  readonly index?: PrefixRecorder | undefined;
  readonly calibration: Calibration;
  readonly outputs: OutputLengths;
  readonly audit?: ClaimAudit | undefined;
  /** Tokens per index block (kvBlockSize), to turn the index's matched blocks into tokens. */
  readonly blockTokens: number;
  readonly onPrediction?: ((check: PredictionCheck) => void) | undefined;
}

/** The prompt as the index sees it (router/prefix.ts PromptPrefix). */
export interface PromptBlocks {
  readonly hashes: readonly BlockHash[];
  readonly promptTokens: number;
  readonly matches: PrefixMatches;
}

/** Who asked, for the per-(tenant, model) output lengths. */
export interface Requester {
  readonly tenant: string;
  readonly model: string;
}

export class Placement {
  readonly #deps: PlacementDeps;
  readonly #heat = new PrefixHeat();

  constructor(deps: PlacementDeps) {
    this.#deps = deps;
  }

  get calibration(): Calibration {
    return this.#deps.calibration;
  }

  /** Output tokens to expect of a request, for RequestFeatures.outputTokens. */
  expectedOutput(who: Requester, maxTokens: number | undefined): number {
    return this.#deps.outputs.expected(who.tenant, who.model, maxTokens);
  }

  /**
   * Routes the request and takes its engine's slot at `nowMs`; undefined when no engine passes the filters.
   * `features.promptTokens` and `features.outputTokens` should be set: the cost model reads them.
   */
  place(features: RequestFeatures, prompt: PromptBlocks | undefined, who: Requester, nowMs: number): PlacedRequest | undefined {
    const { pipeline, fleet } = this.#deps;
    const shared = prompt === undefined ? undefined : sharedBlock(prompt);
    const routed =
      shared === undefined || features.prefix === undefined
        ? features
        : { ...features, prefix: { ...features.prefix, recentSharers: this.#heat.sharers(shared, nowMs) } };
    const decision = pipeline.route(routed, fleet.snapshot());
    if (decision === undefined) return undefined;
    if (shared !== undefined) this.#heat.touch(shared, nowMs);
    return new PlacedRequest(this.#deps, decision, features, prompt, who, nowMs);
  }
}

/** The last block of the longest prefix of the prompt any engine holds, or undefined when none holds any. */
function sharedBlock(prompt: PromptBlocks): BlockHash | undefined {
  let longest = 0;
  for (const matched of prompt.matches.values()) if (matched > longest) longest = matched;
  return longest === 0 ? undefined : prompt.hashes[Math.min(longest, prompt.hashes.length) - 1];
}

/** One request on its engine, from placement to its end. Each method may be called once, in this order. */
export class PlacedRequest {
  readonly decision: RoutingDecision;
  readonly engineId: string;
  readonly matchedBlocks: number;
  readonly totalBlocks: number;
  /** The engine model's prediction for the chosen engine, whatever policy chose it. */
  readonly predictedTtftMs: number;
  readonly predictedTpotMs: number;
  readonly predictedE2eMs: number;
  readonly #deps: PlacementDeps;
  readonly #prompt: PromptBlocks | undefined;
  readonly #who: Requester;
  readonly #load: RequestLoad;
  readonly #queuedAhead: number;
  readonly #placedAtMs: number;
  #firstTokenAtMs: number | undefined;
  #kvAtFirstToken = 0;
  #prefillShareAtFirstToken = 0;
  #done = false;

  constructor(deps: PlacementDeps, decision: RoutingDecision, features: RequestFeatures, prompt: PromptBlocks | undefined, who: Requester, nowMs: number) {
    this.#deps = deps;
    this.#prompt = prompt;
    this.#who = who;
    this.#placedAtMs = nowMs;
    this.decision = decision;
    const engine = decision.engine;
    this.engineId = engine.spec.id;
    this.totalBlocks = prompt?.hashes.length ?? 0;
    // The index may know more blocks of a chain than this prompt has: only the prompt's own can be held.
    this.matchedBlocks = Math.min(this.totalBlocks, prompt?.matches.get(this.engineId) ?? 0);
    const promptTokens = features.promptTokens ?? prompt?.promptTokens ?? 0;
    const outputTokens = features.outputTokens ?? 1;
    const uncached = this.totalBlocks === 0 ? promptTokens : Math.round(promptTokens * (1 - this.matchedBlocks / this.totalBlocks));
    const load = queuedLoad(engine);
    const perf = deps.calibration.perf(engine.spec);
    const p = predictLatency(perf, load, { promptTokens, uncachedTokens: uncached, outputTokens });
    // The fixed latency every request pays is the same on every engine, so routing leaves it out; a prediction has it.
    this.predictedTtftMs = p.ttftMs + deps.calibration.overheadMs(engine.spec);
    this.predictedTpotMs = outputTokens > 1 ? p.decodeMs / (outputTokens - 1) : 0;
    this.predictedE2eMs = this.predictedTtftMs + p.decodeMs;
    this.#queuedAhead = queuedPrefill(perf, load);
    this.#load = { prefillTokens: uncached, kvTokens: promptTokens + outputTokens / 2, outputTokens };
    deps.fleet.acquire(this.engineId, this.#load);
    // Recorded at decision time, as the engine starts prefilling: a burst sharing this prefix follows at once.
    if (prompt !== undefined && this.totalBlocks > 0) deps.index?.recordStored(this.engineId, prompt.hashes);
  }

  /** The first byte of the answer came: the prompt is prefilled. */
  firstToken(nowMs: number): void {
    if (this.#firstTokenAtMs !== undefined || this.#done) return;
    this.#firstTokenAtMs = nowMs;
    const engine = this.#engine();
    this.#kvAtFirstToken = engine?.inFlightKvTokens ?? 0;
    this.#prefillShareAtFirstToken = engine === undefined ? 0 : prefillShare(this.#deps.calibration.perf(engine.spec), queuedLoad(engine));
    this.#deps.fleet.prefillDone(this.engineId, this.#load);
  }

  /**
   * The request failed before its first byte: the engine holds none of the blocks the index was told it would,
   * so that record is undone (the blocks it already held stay), and the slot is given back.
   */
  abandon(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#firstTokenAtMs === undefined) {
      this.#deps.fleet.prefillDone(this.engineId, this.#load);
      const hashes = this.#prompt?.hashes;
      if (hashes !== undefined && this.matchedBlocks < hashes.length) this.#deps.index?.recordRemoved(this.engineId, hashes.slice(this.matchedBlocks));
    }
    this.#deps.fleet.release(this.engineId, this.#load);
  }

  /** The answer ended (whole, or a stream that may have broken after its first byte). */
  finish(outcome: Outcome): void {
    if (this.#done) return;
    if (this.#firstTokenAtMs === undefined) this.firstToken(outcome.atMs);
    this.#done = true;
    const engine = this.#engine();
    this.#deps.fleet.release(this.engineId, this.#load);
    if (outcome.completionTokens !== undefined) this.#deps.outputs.observe(this.#who.tenant, this.#who.model, outcome.completionTokens);
    if (outcome.cachedTokens !== undefined) this.#checkClaim(outcome.cachedTokens);
    if (outcome.streamed && engine !== undefined) this.#learn(engine, outcome);
  }

  /** Calibrates the engine's figures from a stream's first token and gaps, and reports the prediction's error. */
  #learn(engine: EngineSnapshot, outcome: Outcome): void {
    const ttftMs = this.#firstTokenAtMs! - this.#placedAtMs;
    const uncached = outcome.cachedTokens === undefined ? this.#load.prefillTokens : Math.max(0, (this.#prompt?.promptTokens ?? 0) - outcome.cachedTokens);
    const { calibration } = this.#deps;
    // Only when its own prefill dominates: the count of prefill queued ahead is the gateway's estimate (claims that
    // the engine may beat with hits of its own), and a rate learnt from it comes out too fast under heavy load.
    if (this.#queuedAhead <= uncached) calibration.observeFirstToken(engine.spec, this.#queuedAhead + uncached, ttftMs, this.#kvAtFirstToken);
    const tokens = outcome.completionTokens ?? 0;
    const tpotMs = tokens > 1 ? (outcome.atMs - this.#firstTokenAtMs!) / (tokens - 1) : undefined;
    if (tpotMs !== undefined) {
      const kvTokens = (this.#kvAtFirstToken + (engine.inFlightKvTokens ?? 0)) / 2;
      const share = (this.#prefillShareAtFirstToken + prefillShare(calibration.perf(engine.spec), queuedLoad(engine))) / 2;
      calibration.observeDecode(engine.spec, tokens, tpotMs, kvTokens, share);
    }
    this.#deps.onPrediction?.({ engineId: this.engineId, predictedTtftMs: this.predictedTtftMs, ttftMs, predictedTpotMs: this.predictedTpotMs, tpotMs });
  }

  /**
   * The engine reported `cachedTokens` of the prompt. When it had far fewer than the index claimed, and nothing
   * was queued ahead (so the claim was not merely a prefill still under way), the engine lost those blocks
   * (restart, eviction without KV events, prefix caching off): the index's entries for them are dropped.
   */
  #checkClaim(cachedTokens: number): void {
    const prompt = this.#prompt;
    if (prompt === undefined || this.totalBlocks === 0) return;
    const claimedTokens = Math.min(prompt.promptTokens, this.matchedBlocks * this.#deps.blockTokens);
    this.#deps.audit?.compare(this.engineId, claimedTokens, cachedTokens);
    // More than a block short (engines count in their own blocks), and by more than half the claim.
    const far = claimedTokens - cachedTokens > this.#deps.blockTokens && cachedTokens * 2 <= claimedTokens;
    if (!far || this.#queuedAhead > 0) return;
    const held = Math.floor(cachedTokens / this.#deps.blockTokens);
    this.#deps.index?.recordRemoved(this.engineId, prompt.hashes.slice(held));
  }

  #engine(): EngineSnapshot | undefined {
    return this.#deps.fleet.snapshot().find((e) => e.spec.id === this.engineId);
  }
}
