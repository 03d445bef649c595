/**
 * JSON schemas of the inference request bodies. They check what the gateway itself relies on (model,
 * stream, token limits, the prompt's shape) and let every other field through to the engine unchanged.
 */

const model = { type: 'string', minLength: 1, maxLength: 256 } as const;
const positiveInt = { type: ['integer', 'null'], minimum: 1 } as const;
const streamOptions = {
  type: ['object', 'null'],
  properties: { include_usage: { type: 'boolean' } },
} as const;

const messageContent = {
  anyOf: [
    { type: 'string' },
    { type: 'null' },
    { type: 'array', items: { type: 'object', required: ['type'], properties: { type: { type: 'string' } } } },
  ],
} as const;

export const chatBodySchema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    model,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool', 'function'] },
          content: messageContent,
          name: { type: 'string' },
        },
      },
    },
    stream: { type: ['boolean', 'null'] },
    stream_options: streamOptions,
    max_tokens: positiveInt,
    max_completion_tokens: positiveInt,
    n: positiveInt,
    temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
    top_p: { type: ['number', 'null'], minimum: 0, maximum: 1 },
    user: { type: 'string' },
  },
} as const;

const tokenIds = { type: 'array', items: { type: 'integer', minimum: 0 } } as const;
/** A prompt or embedding input: text, texts, token ids, or lists of token ids. */
const textOrTokens = {
  anyOf: [
    { type: 'string' },
    { type: 'array', minItems: 1, items: { type: 'string' } },
    { ...tokenIds, minItems: 1 },
    { type: 'array', minItems: 1, items: tokenIds },
  ],
} as const;

export const completionBodySchema = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    model,
    prompt: textOrTokens,
    stream: { type: ['boolean', 'null'] },
    stream_options: streamOptions,
    max_tokens: positiveInt,
    n: positiveInt,
    temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
    user: { type: 'string' },
  },
} as const;

export const embeddingBodySchema = {
  type: 'object',
  required: ['model', 'input'],
  properties: {
    model,
    input: textOrTokens,
    user: { type: 'string' },
  },
} as const;
