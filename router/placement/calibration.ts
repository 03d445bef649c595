import { DEFAULT_ENGINE_PERF, type EnginePerf, type EngineSpec } from '../../core/engine.js';

/**
 * Each engine's EnginePerf, learned online from what the gateway sees of its answers, starting from the
 * configured figures (routing.engineModel, an engine's own `perf`). Engines differ (GPU, model size, quantisation,
 * another tenant on the node), and a model whose figures are wrong sends an engine twice its share or half of it.
 *
 * - Prefill rate, from each stream's TTFT: its prefill part (TTFT less one step) over the tokens that had to be
 *   prefilled before it (the pending prefill ahead of it and its own uncached prompt), as an exponentially
 *   weighted ratio of sums, so long prompts weigh more than short ones, whose TTFT is mostly scheduling noise.
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
/** Prompts shorter than this teach nothing about prefill: their TTFT is a step plus scheduling noise. */
export const MIN_PREFILL_TOKENS = 256;
/** Streams with fewer tokens than this give no usable mean gap. */
export const MIN_DECODE_TOKENS = 8;
/** Strength of the pull between the two step terms' scales, relative to the data's weight. */
const RIDGE = 0.05;
/** KV of the prior's pseudo-observation of a step (tokens): a mid-sized batch. */
const PRIOR_KV_TOKENS = 64_000;
/** No estimate moves further than this factor from its prior: one absurd observation must not wreck routing. */
const MAX_FACTOR = 20;

const decay = 1 - 1 / CALIBRATION_WINDOW;

class EngineCalibration {
  readonly #prior: EnginePerf;
  #perf: EnginePerf;
  // Prefill: sums of tokens and of their prefill ms.
  #tokens: number;
  #prefillMs: number;
  // Step fit over features f1 = base0, f2 = slope0 * kv / 1000: weighted sums of f1^2, f1 f2, f2^2, f1 y, f2 y.
  #s11: number;
  #s12: number;
  #s22: number;
  #s1y: number;
  #s2y: number;

  constructor(prior: EnginePerf) {
    this.#prior = prior;
    this.#perf = prior;
    const tokens = PRIOR_WEIGHT * 4096;
    this.#tokens = tokens;
    this.#prefillMs = (1000 * tokens) / prior.prefillTokensPerSec;
    this.#s11 = this.#s12 = this.#s22 = this.#s1y = this.#s2y = 0;
    const f2 = (prior.decodeMsPer1kKvTokens * PRIOR_KV_TOKENS) / 1000;
    this.#addStep(PRIOR_WEIGHT, prior.decodeBaseMs, f2, prior.decodeBaseMs + f2);
  }

  get perf(): EnginePerf {
    return this.#perf;
  }

  observePrefill(tokens: number, prefillMs: number): void {
    if (!(tokens >= MIN_PREFILL_TOKENS && prefillMs > 0 && Number.isFinite(prefillMs))) return;
    this.#tokens = decay * this.#tokens + tokens;
    this.#prefillMs = decay * this.#prefillMs + prefillMs;
    this.#update();
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
    const r = RIDGE * (this.#s11 + this.#s22);
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
    const rate = (1000 * this.#tokens) / this.#prefillMs;
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
    return this.#engines.get(spec.id)?.perf ?? (spec.perf === undefined ? this.#defaults : { ...this.#defaults, ...spec.perf });
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
