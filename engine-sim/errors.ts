/**
 * Errors in vLLM's current shape: {"error":{"message","type","param","code"}} where `code` is the HTTP status as a
 * number and `type` a Python exception-style name ("BadRequestError", "NotFoundError"). This differs from OpenAI's
 * shape (string code, snake_case type) in core/errors.ts on purpose: a gateway must cope with what vLLM sends.
 */

export interface VllmErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

export class SimError extends Error {
  readonly status: number;
  readonly type: string;
  readonly param: string | null;

  constructor(status: number, message: string, opts: { type?: string; param?: string | null } = {}) {
    super(message);
    this.name = 'SimError';
    this.status = status;
    this.type = opts.type ?? errorTypeForStatus(status);
    this.param = opts.param ?? null;
  }

  toJSON(): VllmErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.status } };
  }
}

/** The exception name vLLM (or the OpenAI Python SDK it mirrors) uses for a status. */
export function errorTypeForStatus(status: number): string {
  switch (status) {
    case 400:
      return 'BadRequestError';
    case 401:
      return 'AuthenticationError';
    case 403:
      return 'PermissionDeniedError';
    case 404:
      return 'NotFoundError';
    case 415:
      return 'UnsupportedMediaTypeError';
    case 422:
      return 'UnprocessableEntityError';
    case 429:
      return 'RateLimitError';
    default:
      return status >= 500 ? 'InternalServerError' : 'BadRequestError';
  }
}

export function modelNotFound(model: string): SimError {
  return new SimError(404, `The model \`${model}\` does not exist.`, { type: 'NotFoundError', param: 'model' });
}

/** vLLM's 400 for a prompt that alone fills the context window. */
export function contextTooLong(maxModelLen: number, promptTokens: number): SimError {
  return new SimError(
    400,
    `This model's maximum context length is ${maxModelLen} tokens. However, your request has ${promptTokens} input tokens. Please reduce the length of the input messages.`,
  );
}
