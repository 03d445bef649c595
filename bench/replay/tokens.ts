import { createRng, hashInts, mixHashes } from '../../core/hash.js';
import { type BlockHashOptions, promptBlockHashes } from '../../kvcache/block-hash.js';
import type { BlockHash } from '../../kvcache/types.js';
import { TRACE_BLOCK_TOKENS, type TraceRequest } from './trace.js';

/**
 * Deterministic prompts for trace requests. A trace names its blocks by id only, so each id gets 512 tokens of
 * its own, drawn from a PRNG seeded by the id: the same id gives the same tokens in every request, process and
 * run, so requests sharing leading ids share a token prefix, and requests that do not, do not.
 *
 * The replayer then hashes each prompt twice, as the two sides of a real deployment do: the engine's KV block
 * hashes (engine-sim's chained 16-token blocks), which decide what its cache actually serves, and the router's
 * (kvcache/block-hash.ts, its default 64-token blocks), which feed and query the prefix index, as in the live
 * gateway's default approximate mode.
 */

/** Token ids are drawn from a Llama-3-sized vocabulary. */
const VOCAB_SIZE = 128_256;
/** Separates these token streams from the PRNG's other uses. */
const TOKEN_SEED = 0x6d6f6f6e;

/** The 512 tokens of trace block `id`. */
export function blockTokens(id: number): Int32Array {
  const rng = createRng(mixHashes(TOKEN_SEED, id));
  const tokens = new Int32Array(TRACE_BLOCK_TOKENS);
  for (let i = 0; i < tokens.length; i++) tokens[i] = Math.floor(rng() * VOCAB_SIZE);
  return tokens;
}

/** The request's prompt: its blocks' tokens in order, cut at input_length. */
export function promptTokens(request: TraceRequest): Int32Array {
  const tokens = new Int32Array(request.inputLength);
  for (let b = 0, at = 0; at < tokens.length; b++, at += TRACE_BLOCK_TOKENS) {
    const block = blockTokens(request.hashIds[b]);
    tokens.set(at + TRACE_BLOCK_TOKENS <= tokens.length ? block : block.subarray(0, tokens.length - at), at);
  }
  return tokens;
}

/** The router's block hashes of the prompt: kvcache's own promptBlockHashes of promptTokens(request). */
export function routerBlockHashes(request: TraceRequest, options: BlockHashOptions): BlockHash[] {
  return promptBlockHashes(promptTokens(request), options);
}

/**
 * Chained block hashes of trace prompts, equal to engine-sim's blockHashes(promptTokens(request), blockSize), with
 * the hashes of each trace block memoised under its parent hash: prompts sharing a prefix share the work, which
 * makes hashing a 4,000-request trace of 15K-token prompts take well under a second.
 */
export class PromptHasher {
  private readonly memo = new Map<string, number[]>();
  private readonly perTraceBlock: number;

  constructor(readonly blockSize: number) {
    if (!(Number.isInteger(blockSize) && blockSize >= 1 && TRACE_BLOCK_TOKENS % blockSize === 0)) {
      throw new RangeError(`engine block size must divide ${TRACE_BLOCK_TOKENS}, got ${blockSize}`);
    }
    this.perTraceBlock = TRACE_BLOCK_TOKENS / blockSize;
  }

  /** Hashes of the prompt's full engine blocks (a trailing partial block has none, as in the engine). */
  hashes(request: TraceRequest): number[] {
    const count = Math.floor(request.inputLength / this.blockSize);
    const out: number[] = new Array(count);
    let parent = 0; // engine-sim's root: the base model, no adapter
    for (let b = 0, done = 0; done < count; b++) {
      const sub = this.traceBlock(parent, request.hashIds[b]);
      const take = Math.min(sub.length, count - done);
      for (let k = 0; k < take; k++) out[done + k] = sub[k];
      done += take;
      parent = sub[sub.length - 1];
    }
    return out;
  }

  /** The engine-block hashes of one whole trace block chained onto `parent`. A partial block uses a prefix of them. */
  private traceBlock(parent: number, id: number): number[] {
    const key = `${parent}:${id}`;
    let sub = this.memo.get(key);
    if (sub === undefined) {
      const tokens = blockTokens(id);
      sub = new Array(this.perTraceBlock);
      let h = parent;
      for (let k = 0; k < this.perTraceBlock; k++) {
        h = hashInts(h, tokens, k * this.blockSize, (k + 1) * this.blockSize);
        sub[k] = h;
      }
      this.memo.set(key, sub);
    }
    return sub;
  }
}
