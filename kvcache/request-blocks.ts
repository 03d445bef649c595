/**
 * From an OpenAI request body to its prompt's block hashes, in one call for the gateway: render the prompt in the
 * canonical form the engine runs (chat-template.ts), tokenize, hash the full blocks (block-hash.ts).
 *
 * Tokenizing is the expensive step, not hashing: a 128K-token prompt (about 600K characters) takes about 20 ms
 * with the approximate tokenizer and 11 ms with gpt-4o's on this machine, against 0.6 ms to hash. So a prompt
 * longer than SEGMENT_CHARS is tokenized in segments of about that size with a yield to the event loop between
 * them, and shorter prompts, the common case, go straight through: the event loop then waits at most about 2 ms
 * at a time (`npm run bench:index`; more once, while the first long prompt warms the JIT up). Segments are cut only before a space that
 * sits between two letters: every GPT-style pre-tokenizer (the approximate one, o200k_base, cl100k_base) ends a
 * piece at such a letter and starts the next one with the space, and BPE never merges across pieces, so the
 * segments' tokens concatenate to exactly the whole text's tokens. Text with no such place is one segment.
 */

import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { type BlockHashOptions, BlockHasher } from './block-hash.js';
import { type ChatMessageText, renderChatPrompt, renderChatPromptPrefix, renderCompletionPrompt } from './chat-template.js';
import { vllmBlockHashes } from './precise-hash.js';
import type { Tokenizer } from './tokenizers/tokenizer.js';
import type { BlockHash } from './types.js';

/** About 1 to 2 ms of tokenizing per event-loop turn (7K to 8K tokens of English). */
export const SEGMENT_CHARS = 32_768;

export interface ContentPart {
  readonly type: string;
  readonly text?: string | undefined;
}

export interface PromptChatMessage {
  readonly role: string;
  readonly content?: string | readonly ContentPart[] | null | undefined;
}

export type CompletionPrompt = string | readonly string[] | readonly number[] | readonly (readonly number[])[];

/** The fields of a /v1/chat/completions or /v1/completions body that make its prompt. */
export type PromptRequest = { readonly messages: readonly PromptChatMessage[] } | { readonly prompt: CompletionPrompt };

export interface RequestBlockOptions extends BlockHashOptions {
  readonly tokenizer: Tokenizer;
  /**
   * `approximate` (default): the router's own xxHash64 chain, seeded by the namespace. `vllm`: the engine's own
   * block hashes (precise-hash.ts), so KV events from the engines and the router's lookups name the same blocks;
   * blockSize must then be the engines' block size, and `loraName` the adapter.
   */
  readonly hashing?: 'approximate' | 'vllm';
  readonly loraName?: string;
}

export interface PromptBlocks {
  /** Chained hashes of the prompt's full blocks, root first. */
  readonly hashes: BlockHash[];
  /** Tokens in the canonical prompt (the incomplete tail block included). */
  readonly promptTokens: number;
}

/**
 * The block hashes of the request's prompt. A batched completion (several prompts) is hashed by its first prompt,
 * which is where a batch's shared prefix is. A chat message part that is not text (an image, audio) ends the
 * prompt there: what follows it cannot be matched without the part, and what precedes it is a true prefix.
 */
export async function requestBlockHashes(body: PromptRequest, options: RequestBlockOptions): Promise<PromptBlocks> {
  const prompt = canonicalPrompt(body);
  const hasher = options.hashing === 'vllm' ? new VllmBlockHasher(options.blockSize, options.loraName) : new BlockHasher(options);
  if (typeof prompt !== 'string') {
    hasher.push(prompt);
  } else if (prompt.length <= SEGMENT_CHARS) {
    hasher.push(options.tokenizer.encode(prompt));
  } else {
    for (let start = 0; start < prompt.length; ) {
      const end = segmentEnd(prompt, start);
      hasher.push(options.tokenizer.encode(prompt.slice(start, end)));
      start = end;
      if (start < prompt.length) await yieldToEventLoop();
    }
  }
  return { hashes: hasher.hashes, promptTokens: hasher.tokenCount };
}

/** BlockHasher's shape over vLLM's hashes: the tokens are collected, and hashed once all have arrived. */
class VllmBlockHasher {
  private readonly tokens: number[] = [];
  private computed: BlockHash[] | undefined;
  constructor(
    private readonly blockSize: number,
    private readonly loraName: string | undefined,
  ) {}

  get tokenCount(): number {
    return this.tokens.length;
  }

  get hashes(): BlockHash[] {
    this.computed ??= vllmBlockHashes(this.tokens, { blockSize: this.blockSize, loraName: this.loraName });
    return this.computed;
  }

  push(tokens: ArrayLike<number>): void {
    for (let i = 0; i < tokens.length; i++) this.tokens.push(tokens[i]!);
    this.computed = undefined;
  }
}

/** The prompt as the engine sees it: text to tokenize, or token ids given by the client. */
export function canonicalPrompt(body: PromptRequest): string | readonly number[] {
  if ('messages' in body) return renderMessages(body.messages);
  const prompt = body.prompt;
  if (typeof prompt === 'string') return renderCompletionPrompt(prompt);
  if (prompt.length === 0) return prompt as readonly number[];
  const first = prompt[0]!;
  if (typeof first === 'number') return prompt as readonly number[];
  return typeof first === 'string' ? renderCompletionPrompt(first) : first;
}

function renderMessages(messages: readonly PromptChatMessage[]): string {
  const complete: ChatMessageText[] = [];
  for (const m of messages) {
    const content = m.content;
    if (typeof content === 'string' || content == null) {
      complete.push({ role: m.role, content: content ?? '' });
      continue;
    }
    let text = '';
    for (const part of content) {
      if (part.type !== 'text' || part.text === undefined) return renderChatPromptPrefix(complete, { role: m.role, content: text });
      text += part.text;
    }
    complete.push({ role: m.role, content: text });
  }
  return renderChatPrompt(complete);
}

// Before a space with a letter on each side, looked for from SEGMENT_CHARS on.
const SEGMENT_BOUNDARY = /(?<=\p{L}) (?=\p{L})/gu;

function segmentEnd(text: string, start: number): number {
  if (text.length - start <= SEGMENT_CHARS) return text.length;
  SEGMENT_BOUNDARY.lastIndex = start + SEGMENT_CHARS;
  const boundary = SEGMENT_BOUNDARY.exec(text);
  return boundary === null ? text.length : boundary.index;
}
