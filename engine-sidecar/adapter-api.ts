/**
 * The sidecar's adapter API, one shape for every engine kind, translated to the engine's own API by
 * adapters-controller/engine-adapters.ts:
 *
 *   POST /v1/lora_adapter/load    {"lora_name", "lora_path"}  200 {"object": "lora_adapter", "lora_name", "status": "loaded"}
 *   POST /v1/lora_adapter/unload  {"lora_name"}               200 {..., "status": "unloaded"}
 *   GET  /v1/lora_adapters                                    200 {"object": "list", "data": [{"lora_name", "lora_path", "parent"}]}
 *
 * Failures answer in OpenAI's error shape (core/errors.ts): 400 a bad body, 409 already loaded, 404 not loaded,
 * 501 an engine that cannot load adapters at run time (llama.cpp), the engine's own 4xx when it refused, 502 an
 * engine error or a malformed answer, 503 the engine unreachable or the sidecar draining, 504 the engine's timeout.
 */

import type { FastifyInstance } from 'fastify';
import { type AdapterEngineRef, EngineAdapterError, type EngineAdapters } from '../adapters-controller/engine-adapters.js';
import { ApiError } from '../core/errors.js';

export interface AdapterApiDeps {
  readonly adapters: EngineAdapters;
  /** The engine as the sidecar reaches it (loopback URL), with its served models when known. */
  readonly engine: () => AdapterEngineRef;
  /** True once the sidecar drains: operations are refused with 503. */
  readonly draining: () => boolean;
}

export function adapterRoutes(app: FastifyInstance, deps: AdapterApiDeps): void {
  const refuseWhileDraining = (): void => {
    if (deps.draining()) throw new ApiError(503, 'the sidecar is draining: the engine is shutting down', { code: 'draining' });
  };

  app.post('/v1/lora_adapter/load', async (request) => {
    refuseWhileDraining();
    const body = objectBody(request.body);
    const name = requiredString(body, 'lora_name');
    const path = requiredString(body, 'lora_path');
    try {
      await deps.adapters.load(deps.engine(), name, path);
    } catch (err) {
      throw toApiError(err);
    }
    return { object: 'lora_adapter', lora_name: name, lora_path: path, status: 'loaded' };
  });

  app.post('/v1/lora_adapter/unload', async (request) => {
    refuseWhileDraining();
    const name = requiredString(objectBody(request.body), 'lora_name');
    try {
      await deps.adapters.unload(deps.engine(), name);
    } catch (err) {
      throw toApiError(err);
    }
    return { object: 'lora_adapter', lora_name: name, status: 'unloaded' };
  });

  app.get('/v1/lora_adapters', async () => {
    let list;
    try {
      list = await deps.adapters.list(deps.engine());
    } catch (err) {
      throw toApiError(err);
    }
    return { object: 'list', data: list.map((a) => ({ lora_name: a.name, lora_path: a.path ?? null, parent: a.parent ?? null })) };
  });
}

function objectBody(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, 'the body must be a JSON object', { code: 'invalid_request' });
  }
  return body as Record<string, unknown>;
}

function requiredString(body: Record<string, unknown>, field: string): string {
  const value = body[field];
  if (typeof value !== 'string' || value.trim() === '') {
    throw new ApiError(400, `'${field}' is required and must be a non-empty string`, { param: field, code: 'invalid_request' });
  }
  return value;
}

/** An EngineAdapterError as the status and code a client acts on; anything else is a 500. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (!(err instanceof EngineAdapterError)) return new ApiError(500, 'internal error', { cause: err });
  const said = err.engineMessage === undefined ? '' : `: ${err.engineMessage}`;
  const what = err.adapter === undefined ? err.operation : `${err.operation} of adapter '${err.adapter}'`;
  switch (err.code) {
    case 'already_loaded':
      return new ApiError(409, `adapter '${err.adapter}' is already loaded${said}`, { code: 'adapter_already_loaded', param: 'lora_name', cause: err });
    case 'not_loaded':
      return new ApiError(404, `adapter '${err.adapter}' is not loaded${said}`, { code: 'adapter_not_loaded', param: 'lora_name', cause: err });
    case 'unsupported':
      return new ApiError(501, `this engine cannot ${err.operation} adapters at run time`, { type: 'invalid_request_error', code: 'adapters_unsupported', cause: err });
    case 'rejected': {
      const status = err.status !== undefined && err.status >= 400 && err.status < 500 ? err.status : 502;
      return new ApiError(status, `the engine refused the ${what} (${err.status ?? 'no status'})${said}`, { code: 'engine_rejected', cause: err });
    }
    case 'timeout':
      return new ApiError(504, `the engine did not answer the ${what} in time`, { code: 'engine_timeout', cause: err });
    case 'unreachable':
      return new ApiError(503, `the engine is unreachable (${err.message})`, { code: 'engine_unavailable', cause: err });
    case 'bad_response':
      return new ApiError(502, `the engine answered the ${what} with something unexpected${said}`, { code: 'engine_bad_response', cause: err });
  }
}
