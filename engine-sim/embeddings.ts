/**
 * Deterministic embeddings for /v1/embeddings, only so a gateway's passthrough can be tested: the same input gives
 * the same unit vector, different inputs different ones; there is no semantic similarity. `base64` encoding is
 * little-endian float32 as OpenAI's, which the official clients request by default.
 */

import { createRng, hashInts } from '../core/hash.js';

export const DEFAULT_EMBEDDING_DIMENSIONS = 256;

export type EncodingFormat = 'float' | 'base64';

export function embed(tokenIds: readonly number[], dimensions: number): Float32Array {
  const random = createRng(hashInts(dimensions, tokenIds));
  const vector = new Float32Array(dimensions);
  let norm = 0;
  for (let i = 0; i < dimensions; i++) {
    const value = random() * 2 - 1;
    vector[i] = value;
    norm += value * value;
  }
  const scale = 1 / Math.sqrt(norm);
  for (let i = 0; i < dimensions; i++) vector[i]! *= scale;
  return vector;
}

export interface EmbeddingsBodyInput {
  readonly id: string;
  readonly created: number;
  readonly model: string;
  readonly vectors: readonly Float32Array[];
  readonly promptTokens: number;
  readonly format: EncodingFormat;
}

export function embeddingsBody({ id, created, model, vectors, promptTokens, format }: EmbeddingsBodyInput): string {
  return JSON.stringify({
    id,
    object: 'list',
    created,
    model,
    data: vectors.map((vector, index) => ({
      index,
      object: 'embedding',
      embedding: format === 'base64' ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64') : Array.from(vector),
    })),
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens, completion_tokens: 0, prompt_tokens_details: null },
  });
}
