/**
 * Response bodies exactly as vLLM's OpenAI server writes them: field order, the vLLM-only fields (stop_reason,
 * prompt_logprobs, kv_transfer_params), and which fields a streamed chunk omits. Stream chunks are string
 * templates around the one part that changes, because a zero-latency sim writes thousands of them per second.
 */

import type { FinishReason } from './generation-plan.js';

export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedTokens: number;
}

export type Endpoint = 'chat' | 'completion';

export interface ResponseHeader {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

function usageJson(usage: Usage) {
  return {
    prompt_tokens: usage.promptTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
    completion_tokens: usage.completionTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedTokens },
  };
}

export function completionBody(endpoint: Endpoint, header: ResponseHeader, text: string, finishReason: FinishReason, usage: Usage): string {
  if (endpoint === 'chat') {
    return JSON.stringify({
      id: header.id,
      object: 'chat.completion',
      created: header.created,
      model: header.model,
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: text,
            refusal: null,
            annotations: null,
            audio: null,
            function_call: null,
            tool_calls: [],
            reasoning_content: null,
          },
          logprobs: null,
          finish_reason: finishReason,
          stop_reason: null,
        },
      ],
      service_tier: null,
      system_fingerprint: null,
      usage: usageJson(usage),
      prompt_logprobs: null,
      kv_transfer_params: null,
    });
  }
  return JSON.stringify({
    id: header.id,
    object: 'text_completion',
    created: header.created,
    model: header.model,
    choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason, stop_reason: null, prompt_logprobs: null }],
    service_tier: null,
    system_fingerprint: null,
    usage: usageJson(usage),
    kv_transfer_params: null,
  });
}

/** Server-sent events of one streamed completion; every method returns complete `data: ...\n\n` frames. */
export interface StreamFrames {
  /** Sent with the first token: the assistant role announcement for chat, nothing for completions. */
  readonly opening: string;
  token(text: string, finishReason: FinishReason | null): string;
  usage(usage: Usage): string;
  readonly done: string;
}

export function streamFrames(endpoint: Endpoint, header: ResponseHeader): StreamFrames {
  const object = endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const head = `data: {"id":${JSON.stringify(header.id)},"object":"${object}","created":${header.created},"model":${JSON.stringify(header.model)},"choices":`;
  const usage = (u: Usage): string => `${head}[],"usage":${JSON.stringify(usageJson(u))}}\n\n`;
  const done = 'data: [DONE]\n\n';
  if (endpoint === 'chat') {
    return {
      opening: `${head}[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`,
      token: (text, finishReason) =>
        finishReason === null
          ? `${head}[{"index":0,"delta":{"content":${JSON.stringify(text)}},"logprobs":null,"finish_reason":null}]}\n\n`
          : `${head}[{"index":0,"delta":{"content":${JSON.stringify(text)}},"logprobs":null,"finish_reason":"${finishReason}","stop_reason":null}]}\n\n`,
      usage,
      done,
    };
  }
  return {
    opening: '',
    token: (text, finishReason) =>
      `${head}[{"index":0,"text":${JSON.stringify(text)},"logprobs":null,"finish_reason":${finishReason === null ? 'null' : `"${finishReason}"`},"stop_reason":null}]}\n\n`,
    usage,
    done,
  };
}
