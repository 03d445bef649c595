import { DEFAULT_ENGINE_PERF, type EnginePerf, type EngineSpec, priorPerf } from '../../core/engine.js';

/**
 * Each engine's EnginePerf, learned online from what the gateway sees of its answers, starting from the
 * configured figures (routing.engineModel, an engine's own `perf`). Engines differ (GPU, model size, quantisation,
 * another tenant on the node), and a model whose figures are wrong sends an engine twice its share or half of it.
 *
 * - Prefill rate, from each stream's TTFT less one step against the tokens that had to be prefilled before its
 *   first token (the pending prefill ahead of it and its own uncached prompt): a weighted least-squares line whose
 *   slope is the rate and whose intercept is the fixed latency every request pays (HTTP, tokenisation, waiting for
 *   the step under way, a busy CPU). Without the intercept that latency reads as a slow prefill, and on a shared
 *   machine a cached prompt's 100 ms of overhead made a 30K tokens/s engine look like 5K.
 * - Step time, from each stream's mean inter-token gap against the KV in flight on the engine meanwhile: a
 *   weighted least-squares fit of gap = a * decodeBaseMs0 + b * decodeMsPer1kKvTokens0 * kv / 1000, the prior's
 *   two terms scaled by a and b. A ridge pulls a and b towards each other (not towards 1): with observations from a
 *   narrow range of KV, where base and slope cannot be told apart, an engine uniformly slower than its prior is
 *   learnt as that, and the prior's shape is kept; across a wide range the data decide both.
 */

/** Observations an estimate effectively remembers: older ones weigh (1 - 1 / WINDOW)^age. */
export const CALIBRATION_WINDOW = 50;
/** The prior counts as this many observations, and fades like them. */
const PRIOR_WEIGHT = 2;
/** Tokens of the prior's pseudo-observation of a prefill: a mid-sized prompt. */
const PRIOR_PREFILL_TOKENS = 8192;
/** Streams with fewer tokens than this give no usable mean gap. */
export const MIN_DECODE_TOKENS = 8;
/**
 * Strength of the pull between the two step terms' scales, as a share of the prior's own weight: fixed, so it
 * fades against the data (a window's worth of it outweighs it 50 times), yet never zero, so observations from a
 * narrow range of KV, which cannot tell base from slope, keep the prior's shape.
 */
const RIDGE = 0.5;
/** KV of the prior's pseudo-observation of a step (tokens): a mid-sized batch. */
const PRIOR_KV_TOKENS = 64_000;
/** No estimate moves further than this factor from its prior: one absurd observation must not wreck routing. */
const MAX_FACTOR = 20;

const decay = 1 - 1 / CALIBRATION_WINDOW;

class EngineCalibration {
  readonly #prior: EnginePerf;
  #perf: EnginePerf;
  // Prefill line ms = overhead + tokens / rate: weighted sums of 1, x, x^2, y, x y (x tokens, y ms).
  #p0 = 0;
  #px = 0;
  #pxx = 0;
  #py = 0;
  #pxy = 0;
  #overheadMs = 0;
  // Step fit over features f1 = base0, f2 = slope0 * kv / 1000: weighted sums of f1^2, f1 f2, f2^2, f1 y, f2 y.
  #s11: number;
  #s12: number;
  #s22: number;
  #s1y: number;
  #s2y: number;
  readonly #ridge: number;

  constructor(prior: EnginePerf) {
    this.#prior = prior;
    this.#perf = prior;
    // The prior line: no overhead, the configured rate.
    this.#addPrefill(PRIOR_WEIGHT, 0, 0);
    this.#addPrefill(PRIOR_WEIGHT, PRIOR_PREFILL_TOKENS, (1000 * PRIOR_PREFILL_TOKENS) / prior.prefillTokensPerSec);
    this.#s11 = this.#s12 = this.#s22 = this.#s1y = this.#s2y = 0;
    const f2 = (prior.decodeMsPer1kKvTokens * PRIOR_KV_TOKENS) / 1000;
    this.#addStep(PRIOR_WEIGHT, prior.decodeBaseMs, f2, prior.decodeBaseMs + f2);
    this.#ridge = RIDGE * PRIOR_WEIGHT * (prior.decodeBaseMs ** 2 + f2 ** 2);
  }

  get perf(): EnginePerf {
    return this.#perf;
  }

  get overheadMs(): number {
    return this.#overheadMs;
  }

  observePrefill(tokens: number, prefillMs: number): void {
    if (!(tokens >= 0 && Number.isFinite(prefillMs))) return;
    this.#p0 *= decay;
    this.#px *= decay;
    this.#pxx *= decay;
    this.#py *= decay;
    this.#pxy *= decay;
    this.#addPrefill(1, tokens, Math.max(0, prefillMs));
    this.#update();
  }

  #addPrefill(weight: number, x: number, y: number): void {
    this.#p0 += weight;
    this.#px += weight * x;
    this.#pxx += weight * x * x;
    this.#py += weight * y;
    this.#pxy += weight * x * y;
  }

  observeStep(kvTokens: number, stepMs: number): void {
    if (!(kvTokens >= 0 && stepMs > 0 && Number.isFinite(stepMs))) return;
    this.#s11 *= decay;
    this.#s12 *= decay;
    this.#s22 *= decay;
    this.#s1y *= decay;
    this.#s2y *= decay;
    this.#addStep(1, this.#prior.decodeBaseMs, (this.#prior.decodeMsPer1kKvTokens * kvTokens) / 1000, stepMs);
    this.#update();
  }

  #addStep(weight: number, f1: number, f2: number, y: number): void {
    this.#s11 += weight * f1 * f1;
    this.#s12 += weight * f1 * f2;
    this.#s22 += weight * f2 * f2;
    this.#s1y += weight * f1 * y;
    this.#s2y += weight * f2 * y;
  }

  #update(): void {
    const r = this.#ridge;
    // Normal equations with the penalty r (a - b)^2: [[s11 + r, s12 - r], [s12 - r, s22 + r]] [a b]' = [s1y s2y]'.
    const m11 = this.#s11 + r;
    const m12 = this.#s12 - r;
    const m22 = this.#s22 + r;
    const det = m11 * m22 - m12 * m12;
    let a = 1;
    let b = 1;
    if (det > 1e-12 * m11 * m22) {
      a = (this.#s1y * m22 - m12 * this.#s2y) / det;
      b = (m11 * this.#s2y - m12 * this.#s1y) / det;
    }
    const prior = this.#prior.prefillTokensPerSec;
    const spread = this.#p0 * this.#pxx - this.#px * this.#px;
    let msPerToken = spread > 1e-9 * this.#p0 * this.#pxx ? (this.#p0 * this.#pxy - this.#px * this.#py) / spread : 1000 / prior;
    msPerToken = bounded((msPerToken * prior) / 1000) * (1000 / prior);
    this.#overheadMs = Math.max(0, (this.#py - msPerToken * this.#px) / this.#p0);
    const rate = 1000 / msPerToken;
    this.#perf = {
      prefillTokensPerSec: bounded(rate / this.#prior.prefillTokensPerSec) * this.#prior.prefillTokensPerSec,
      decodeBaseMs: bounded(a) * this.#prior.decodeBaseMs,
      decodeMsPer1kKvTokens: bounded(b) * this.#prior.decodeMsPer1kKvTokens,
    };
  }
}

function bounded(factor: number): number {
  return Number.isFinite(factor) ? Math.min(MAX_FACTOR, Math.max(1 / MAX_FACTOR, factor)) : 1;
}

export class Calibration {
  readonly #defaults: EnginePerf;
  readonly #engines = new Map<string, EngineCalibration>();

  /** `defaults`: routing.engineModel; an engine's spec.perf overrides them field by field. */
  constructor(defaults: EnginePerf = DEFAULT_ENGINE_PERF) {
    this.#defaults = defaults;
  }

  /** The engine's current figures: its prior until it has answered, then what its answers taught. */
  perf(spec: EngineSpec): EnginePerf {
    return this.#engines.get(spec.id)?.perf ?? priorPerf(spec, this.#defaults);
  }

  /** The fixed latency the engine's first tokens show besides prefill and a step (0 before it has answered). */
  overheadMs(spec: EngineSpec): number {
    return this.#engines.get(spec.id)?.overheadMs ?? 0;
  }

  /** A first token came `ttftMs` after dispatch, with `tokens` to prefill before it and `kvTokens` in flight. */
  observeFirstToken(spec: EngineSpec, tokens: number, ttftMs: number, kvTokens: number): void {
    const engine = this.#engine(spec);
    const perf = engine.perf;
    engine.observePrefill(tokens, ttftMs - perf.decodeBaseMs - (perf.decodeMsPer1kKvTokens * kvTokens) / 1000);
  }

  /**
   * A stream's tokens after the first came `meanGapMs` apart, with about `kvTokens` in flight and `prefillShare` of
   * the engine's time going to prefill meanwhile (engine-model.ts): a step took the gap's other share.
   */
  observeDecode(spec: EngineSpec, outputTokens: number, meanGapMs: number, kvTokens: number, prefillShare: number): void {
    if (outputTokens < MIN_DECODE_TOKENS) return;
    this.#engine(spec).observeStep(kvTokens, meanGapMs * (1 - prefillShare));
  }

  /** The engine left the fleet (or restarted on other hardware): it starts again from its prior. */
  forget(id: string): void {
    this.#engines.delete(id);
  }

  #engine(spec: EngineSpec): EngineCalibration {
    let engine = this.#engines.get(spec.id);
    if (engine === undefined) {
      engine = new EngineCalibration(this.perf(spec));
      this.#engines.set(spec.id, engine);
    }
    return engine;
  }
}
