/**
 * Request bodies the simulator accepts, validated as loosely as vLLM does: unknown fields are ignored (vLLM only
 * logs them), nulls are accepted where OpenAI clients send them, and what the simulator cannot honour (n > 1,
 * batched prompts, non-text content) is rejected with a 400 that says so rather than silently answered wrong.
 */

import { z } from 'zod';
import { SimError } from './errors.js';

const positiveInt = z.number().int().min(1);
const tokenIds = z.array(z.number().int().min(0));
const promptInput = z.union([z.string(), z.array(z.string()), tokenIds, z.array(tokenIds)]);

const contentPart = z.looseObject({ type: z.string(), text: z.string().optional() });

const chatMessage = z.looseObject({
  role: z.string(),
  content: z.union([z.string(), z.array(contentPart)]).nullish(),
});

const streamOptions = z.looseObject({ include_usage: z.boolean().nullish() });

const generationFields = {
  model: z.string().nullish(),
  stream: z.boolean().nullish(),
  stream_options: streamOptions.nullish(),
  seed: z.number().int().nullish(),
  n: z.literal(1, { error: 'n > 1 is not supported by the simulator' }).nullish(),
};

export const chatRequestSchema = z.looseObject({
  ...generationFields,
  messages: z.array(chatMessage),
  max_tokens: positiveInt.nullish(),
  max_completion_tokens: positiveInt.nullish(),
});

export const completionRequestSchema = z.looseObject({
  ...generationFields,
  prompt: promptInput,
  max_tokens: positiveInt.nullish(),
});

export const embeddingRequestSchema = z.looseObject({
  model: z.string().nullish(),
  input: promptInput,
  encoding_format: z.enum(['float', 'base64']).nullish(),
  dimensions: positiveInt.max(4096).nullish(),
});

export const loadLoraSchema = z.looseObject({ lora_name: z.string().nullish(), lora_path: z.string().nullish() });
export const unloadLoraSchema = z.looseObject({ lora_name: z.string().nullish() });

export type ChatRequest = z.infer<typeof chatRequestSchema>;
export type CompletionRequest = z.infer<typeof completionRequestSchema>;
export type PromptInput = z.infer<typeof promptInput>;

/** Validates a request body, turning the first problem into a 400 that names the offending field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map(String).join('.');
  const param = issue.path.length > 0 ? String(issue.path[0]) : null;
  throw new SimError(400, path === '' ? `Invalid request body: ${issue.message}` : `Invalid value for '${path}': ${issue.message}`, { param });
}

/** One prompt out of a completion or embedding `input`, or a 400 for a batch the simulator does not serve. */
export function singlePrompt(input: PromptInput, field: string): string | number[] {
  if (typeof input === 'string') return input;
  if (input.length === 0) throw new SimError(400, `'${field}' cannot be empty`, { param: field });
  const first = input[0]!;
  if (typeof first === 'number') return input as number[];
  if (input.length > 1) throw new SimError(400, `Batched '${field}' (${input.length} prompts) is not supported by the simulator; send one prompt per request`, { param: field });
  return first;
}

/** The text of a chat message's content; image or audio parts get a 400 because the simulated model is text-only. */
export function messageText(content: ChatRequest['messages'][number]['content']): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  let text = '';
  for (const part of content) {
    if (part.type !== 'text' || part.text === undefined) {
      throw new SimError(400, `Content part of type '${part.type}' is not supported: the simulated model is text-only`, { param: 'messages' });
    }
    text += part.text;
  }
  return text;
}
