/**
 * Decides, before the engine runs, everything about a generation that does not depend on timing: how many tokens
 * it produces, which ones, why it stops, and the block hashes of its prompt and output. Doing it up front keeps
 * the engine loop's hot path to bookkeeping, and lets the prefix cache learn output blocks as they are computed.
 */

import { hashInts, mixHashes } from '../core/hash.js';
import { type GeneratedText, generateOutput, sampleOutputLength } from './output.js';
import { type BlockHash, blockHashes } from './prefix-cache.js';
import { contextTooLong, SimError } from './errors.js';

export type FinishReason = 'stop' | 'length';

export interface GenerationLimits {
  readonly maxModelLen: number;
  readonly blockSize: number;
  /** Mean length of answers to requests without max_tokens (the model "chooses" when to stop). */
  readonly outputLenMean: number;
  readonly outputLenMax: number;
  /** Mixed into every output seed, so differently seeded sims answer the same prompt differently. */
  readonly simSeed: number;
}

export interface GenerationPlan {
  readonly promptTokens: number;
  readonly output: GeneratedText;
  readonly finishReason: FinishReason;
  /** Hashes of the full blocks of prompt + output, namespaced by the adapter. */
  readonly blockHashes: BlockHash[];
}

/**
 * With max_tokens the answer is exactly that long and ends with "length" (as vLLM with ignore_eos, which is what
 * benchmarks send), so a test controls its cost; without, a sampled length ending with "stop", unless it runs
 * into the context window. The text is seeded by the request's seed, else by the prompt.
 */
export function planGeneration(
  promptIds: readonly number[],
  maxTokens: number | undefined,
  requestSeed: number | undefined,
  adapter: string | undefined,
  limits: GenerationLimits,
): GenerationPlan {
  const promptTokens = promptIds.length;
  const room = limits.maxModelLen - promptTokens;
  if (maxTokens === undefined && room <= 0) throw contextTooLong(limits.maxModelLen, promptTokens);
  if (maxTokens !== undefined && maxTokens > room) {
    throw new SimError(
      400,
      `'max_tokens' or 'max_completion_tokens' is too large: ${maxTokens}. This model's maximum context length is ${limits.maxModelLen} tokens and your request has ${promptTokens} input tokens (${maxTokens} > ${limits.maxModelLen} - ${promptTokens}).`,
    );
  }
  const seed = mixHashes(limits.simSeed, requestSeed ?? hashInts(0, promptIds));
  let outputTokens: number;
  let finishReason: FinishReason;
  if (maxTokens !== undefined) {
    outputTokens = maxTokens;
    finishReason = 'length';
  } else {
    const natural = sampleOutputLength(seed, limits.outputLenMean, limits.outputLenMax);
    outputTokens = Math.min(natural, room);
    finishReason = natural >= room ? 'length' : 'stop';
  }
  const output = generateOutput(seed, outputTokens);
  const sequence = promptIds.concat(output.ids);
  return { promptTokens, output, finishReason, blockHashes: blockHashes(sequence, limits.blockSize, adapter ?? '') };
}
