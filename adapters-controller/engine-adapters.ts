/**
 * LoRA adapters on one engine through the engine's own HTTP API: list, load, unload.
 *
 * vLLM (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True):
 *   POST /v1/load_lora_adapter   {"lora_name", "lora_path"}   200 text "Success: ..."; 400/404 with an error body
 *   POST /v1/unload_lora_adapter {"lora_name"}
 *   GET  /v1/models: the base model(s) with `parent: null`, each resident adapter with `parent: <base>` and
 *        `root: <lora_path>`.
 * SGLang (--enable-lora):
 *   POST /load_lora_adapter   {"lora_name", "lora_path"}   200 / 400 with {"success", "error_message", ...}
 *   POST /unload_lora_adapter {"lora_name"}
 *   GET  /v1/models lists loaded adapters the same way (id = lora_name, root = lora_path, parent = served model).
 *   Assumed from SGLang's http_server.py (v0.4.9+); older SGLang did not list adapters in /v1/models, and there
 *   an adapter loaded by this controller would be seen only through the store.
 * llama.cpp: adapters are fixed at start-up (--lora) and only their scales change at run time, so it has none to
 *   place: list answers [], load and unload refuse with EngineAdapterError('unsupported').
 *
 * Error bodies differ by engine and version: vLLM's current {"error": {"message"}}, its older flat
 * {"object": "error", "message"}, FastAPI's {"detail"}, SGLang's {"error_message"}; the message found is carried
 * in EngineAdapterError.engineMessage and its text. "Already loaded" on load and "not found" on unload are told
 * apart (codes already_loaded / not_loaded) because a controller reconciling state treats both as success.
 */

import { Agent, request, type Dispatcher } from 'undici';
import type { EngineKind } from '../core/engine.js';

/** Where to reach an engine's adapter API. */
export interface AdapterEngineRef {
  readonly id: string;
  /** Base URL (an origin), e.g. http://127.0.0.1:8001 */
  readonly url: string;
  readonly kind: EngineKind;
  /** The engine's served (base) models: an engine that sends no `parent` field tells adapters from these. */
  readonly models?: readonly string[];
  /**
   * The engine's sidecar, when it has one: loads and unloads then go through the sidecar's adapter API
   * (/v1/lora_adapter/load, /unload), which speaks the engine's own for it. Listing still asks the engine.
   */
  readonly sidecarUrl?: string | undefined;
}

/** An adapter resident on an engine, as its /v1/models lists it. */
export interface ResidentAdapter {
  readonly name: string;
  /** Where it was loaded from (`root`), when the engine says. */
  readonly path: string | undefined;
  /** The base model (`parent`), when the engine says. */
  readonly parent: string | undefined;
}

export type EngineAdapterErrorCode =
  /** The engine already holds an adapter of that name (load). */
  | 'already_loaded'
  /** The engine holds no adapter of that name (unload). */
  | 'not_loaded'
  /** The engine answered with another error status (full, bad path, LoRA disabled...). */
  | 'rejected'
  | 'timeout'
  /** Connection refused, reset, DNS... */
  | 'unreachable'
  /** A 2xx whose body is not what the API promises. */
  | 'bad_response'
  | 'unsupported';

export class EngineAdapterError extends Error {
  readonly engine: string;
  readonly operation: 'list' | 'load' | 'unload';
  readonly adapter: string | undefined;
  readonly code: EngineAdapterErrorCode;
  /** HTTP status, when the engine answered. */
  readonly status: number | undefined;
  /** The engine's own message, when it sent one. */
  readonly engineMessage: string | undefined;

  constructor(
    fields: {
      engine: string;
      operation: 'list' | 'load' | 'unload';
      adapter?: string | undefined;
      code: EngineAdapterErrorCode;
      status?: number | undefined;
      engineMessage?: string | undefined;
      detail?: string | undefined;
    },
    options?: { cause?: unknown },
  ) {
    const what = fields.adapter === undefined ? fields.operation : `${fields.operation} of adapter "${fields.adapter}"`;
    const why = fields.status !== undefined ? `${fields.status}${fields.engineMessage ? `: ${fields.engineMessage}` : ''}` : (fields.detail ?? fields.code);
    super(`engine "${fields.engine}": ${what} failed (${why})`, options);
    this.name = 'EngineAdapterError';
    this.engine = fields.engine;
    this.operation = fields.operation;
    this.adapter = fields.adapter;
    this.code = fields.code;
    this.status = fields.status;
    this.engineMessage = fields.engineMessage;
  }
}

export interface EngineAdaptersOptions {
  /** GET /v1/models. Default 5 s. */
  readonly listTimeoutMs?: number;
  /** A load: the engine reads the adapter (maybe downloads it) before it answers. Default 120 s. */
  readonly loadTimeoutMs?: number;
  /** Default 30 s. */
  readonly unloadTimeoutMs?: number;
  /** Default: an own keep-alive agent, closed by close(). */
  readonly dispatcher?: Dispatcher;
}

export const ENGINE_ADAPTERS_DEFAULTS = { listTimeoutMs: 5_000, loadTimeoutMs: 120_000, unloadTimeoutMs: 30_000 } as const;

// Engine error bodies can be large (tracebacks); the message is cut to this many characters.
const MAX_MESSAGE = 500;

/** The adapter API of every kind of engine, over one connection agent. */
export class EngineAdapters {
  readonly #listTimeoutMs: number;
  readonly #loadTimeoutMs: number;
  readonly #unloadTimeoutMs: number;
  readonly #dispatcher: Dispatcher;
  readonly #ownsDispatcher: boolean;

  constructor(opts: EngineAdaptersOptions = {}) {
    this.#listTimeoutMs = positive('listTimeoutMs', opts.listTimeoutMs ?? ENGINE_ADAPTERS_DEFAULTS.listTimeoutMs);
    this.#loadTimeoutMs = positive('loadTimeoutMs', opts.loadTimeoutMs ?? ENGINE_ADAPTERS_DEFAULTS.loadTimeoutMs);
    this.#unloadTimeoutMs = positive('unloadTimeoutMs', opts.unloadTimeoutMs ?? ENGINE_ADAPTERS_DEFAULTS.unloadTimeoutMs);
    this.#ownsDispatcher = opts.dispatcher === undefined;
    // Few connections per engine: adapter operations are rare, and a load in flight must not queue a list behind it.
    this.#dispatcher = opts.dispatcher ?? new Agent({ connections: 4, keepAliveTimeout: 4_000 });
  }

  /** The adapters resident on the engine (loading ones are not listed until their load completes). */
  async list(engine: AdapterEngineRef): Promise<ResidentAdapter[]> {
    if (engine.kind === 'llamacpp') return [];
    const { status, text } = await this.#call(engine, 'list', undefined, 'GET', '/v1/models', undefined, this.#listTimeoutMs);
    if (status < 200 || status >= 300) throw new EngineAdapterError({ engine: engine.id, operation: 'list', code: 'rejected', status, engineMessage: errorMessage(text) });
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const data = (body as { data?: unknown } | undefined)?.data;
    if (!Array.isArray(data)) {
      throw new EngineAdapterError({ engine: engine.id, operation: 'list', code: 'bad_response', status, engineMessage: 'GET /v1/models: no `data` list' });
    }
    const served = new Set(engine.models ?? []);
    const out: ResidentAdapter[] = [];
    for (const entry of data) {
      if (typeof entry !== 'object' || entry === null) continue;
      const { id, root, parent } = entry as { id?: unknown; root?: unknown; parent?: unknown };
      if (typeof id !== 'string' || id === '') continue;
      // An adapter names its base model in `parent`; the base model's own entry has parent null. An engine that
      // sends no `parent` at all: anything but the served models is an adapter.
      const isAdapter = typeof parent === 'string' ? parent !== '' : !('parent' in entry) && served.size > 0 && !served.has(id);
      if (!isAdapter) continue;
      out.push({ name: id, path: typeof root === 'string' ? root : undefined, parent: typeof parent === 'string' ? parent : undefined });
    }
    return out;
  }

  /**
   * Loads `name` from `source` (a path or a hub id, as the engine reads it). Resolves once the engine answered
   * success, i.e. the adapter is resident. Rejects with EngineAdapterError; code already_loaded when the engine
   * already holds that name.
   */
  async load(engine: AdapterEngineRef, name: string, source: string): Promise<void> {
    const [base, path] = engine.sidecarUrl === undefined ? [engine.url, adapterPath(engine, 'load', name)] : [engine.sidecarUrl, '/v1/lora_adapter/load'];
    const { status, text } = await this.#call(engine, 'load', name, 'POST', path, { lora_name: name, lora_path: source }, this.#loadTimeoutMs, base);
    this.#check(engine, 'load', name, status, text);
  }

  /** Unloads `name`. Rejects with EngineAdapterError; code not_loaded when the engine holds no such adapter. */
  async unload(engine: AdapterEngineRef, name: string): Promise<void> {
    const [base, path] = engine.sidecarUrl === undefined ? [engine.url, adapterPath(engine, 'unload', name)] : [engine.sidecarUrl, '/v1/lora_adapter/unload'];
    const { status, text } = await this.#call(engine, 'unload', name, 'POST', path, { lora_name: name }, this.#unloadTimeoutMs, base);
    this.#check(engine, 'unload', name, status, text);
  }

  async close(): Promise<void> {
    if (this.#ownsDispatcher) await this.#dispatcher.close();
  }

  #check(engine: AdapterEngineRef, operation: 'load' | 'unload', name: string, status: number, text: string): void {
    const message = errorMessage(text);
    // SGLang answers {"success": false, ...} with 400; a 200 that says so is a failure too.
    const refused = status < 200 || status >= 300 || successFalse(text);
    if (!refused) return;
    let code: EngineAdapterErrorCode = 'rejected';
    if (operation === 'load' && /already (been )?loaded|already exists/i.test(message ?? '')) code = 'already_loaded';
    if (operation === 'unload' && (status === 404 || /cannot be found|not found|not loaded|does not exist/i.test(message ?? ''))) code = 'not_loaded';
    throw new EngineAdapterError({ engine: engine.id, operation, adapter: name, code, status, engineMessage: message });
  }

  async #call(
    engine: AdapterEngineRef,
    operation: 'list' | 'load' | 'unload',
    adapter: string | undefined,
    method: 'GET' | 'POST',
    path: string,
    body: object | undefined,
    timeoutMs: number,
    base: string = engine.url,
  ): Promise<{ status: number; text: string }> {
    let origin: string;
    try {
      origin = new URL(base).origin;
    } catch (err) {
      throw new EngineAdapterError({ engine: engine.id, operation, adapter, code: 'unreachable', detail: `bad url "${base}"` }, { cause: err });
    }
    try {
      const res = await request(origin + path, {
        method,
        dispatcher: this.#dispatcher,
        headers: body === undefined ? { accept: 'application/json' } : { 'content-type': 'application/json', accept: 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      return { status: res.statusCode, text: await res.body.text() };
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string };
      if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
        throw new EngineAdapterError({ engine: engine.id, operation, adapter, code: 'timeout', detail: `no answer within ${timeoutMs} ms` }, { cause: err });
      }
      throw new EngineAdapterError({ engine: engine.id, operation, adapter, code: 'unreachable', detail: e?.code ?? e?.message ?? String(err) }, { cause: err });
    }
  }
}

function adapterPath(engine: AdapterEngineRef, operation: 'load' | 'unload', name: string): string {
  switch (engine.kind) {
    case 'vllm':
      return `/v1/${operation}_lora_adapter`;
    case 'sglang':
      return `/${operation}_lora_adapter`;
    default:
      throw new EngineAdapterError({ engine: engine.id, operation, adapter: name, code: 'unsupported', detail: `${engine.kind} engines cannot ${operation} adapters at run time` });
  }
}

/** The message of an engine's error body, whatever its shape; the raw text when it is not JSON. */
function errorMessage(text: string): string | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  let body: unknown;
  try {
    body = JSON.parse(trimmed);
  } catch {
    return cut(trimmed);
  }
  if (typeof body === 'string') return cut(body);
  if (typeof body !== 'object' || body === null) return cut(trimmed);
  const b = body as { error?: unknown; message?: unknown; detail?: unknown; error_message?: unknown };
  const nested = typeof b.error === 'object' && b.error !== null ? (b.error as { message?: unknown }).message : b.error;
  for (const candidate of [nested, b.message, b.error_message, b.detail]) {
    if (typeof candidate === 'string' && candidate !== '') return cut(candidate);
  }
  if (b.detail !== undefined) return cut(JSON.stringify(b.detail));
  return cut(trimmed);
}

function successFalse(text: string): boolean {
  if (!text.startsWith('{')) return false;
  try {
    return (JSON.parse(text) as { success?: unknown }).success === false;
  } catch {
    return false;
  }
}

function cut(s: string): string {
  return s.length > MAX_MESSAGE ? `${s.slice(0, MAX_MESSAGE)}...` : s;
}

function positive(name: string, v: number): number {
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`EngineAdapters: ${name} must be a positive number, got ${v}`);
  return v;
}
